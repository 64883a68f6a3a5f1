"""The embedded S3 server's command line and ports (no process started)."""

from __future__ import annotations

from pathlib import Path

from devstack.seaweedfs import GRPC_OFFSET, SeaweedfsSpec

SPEC = SeaweedfsSpec(Path("/var/tmp/h/data/seaweedfs"), access_key_id="TRACEK", secret_access_key="s3cr3t",
                     s3_port=18333, master_port=18334, volume_port=18335, filer_port=18336, admin_port=18337)


def test_every_port_and_its_grpc_port_is_named() -> None:
    assert SPEC.ports() == {
        "s3": 18333, "master": 18334, "volume": 18335, "filer": 18336, "admin": 18337,
        "s3 grpc": 28333, "master grpc": 28334, "volume grpc": 28335, "filer grpc": 28336,
        "admin grpc": 28337}
    assert GRPC_OFFSET == 10000
    assert SPEC.endpoint == "http://127.0.0.1:18333"


def test_the_command_line_pins_every_port_and_turns_off_what_we_do_not_use() -> None:
    argv = SPEC.argv(Path("/venv/bin/weed"))
    assert argv[:5] == ["/venv/bin/weed", "mini", "-dir=/var/tmp/h/data/seaweedfs/store", "-ip=127.0.0.1",
                        "-ip.bind=127.0.0.1"]
    for name, port in SPEC.http_ports().items():
        assert f"-{name}.port={port}" in argv and f"-{name}.port.grpc={port + GRPC_OFFSET}" in argv
    for flag in ("-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
                 "-master.telemetry=false", "-s3.autoCreateBucket=false",
                 "-s3.config=/var/tmp/h/data/seaweedfs/s3.json",
                 "-filer.localSocket=/var/tmp/h/data/seaweedfs/filer.sock"):
        assert flag in argv
    assert "s3cr3t" not in " ".join(argv) and "s3cr3t" not in repr(SPEC)


def test_a_socket_path_too_long_for_unix_sockets_is_left_to_weed() -> None:
    deep = SeaweedfsSpec(Path("/var/tmp/" + "d" * 100), access_key_id="k", secret_access_key="s")
    assert not [arg for arg in deep.argv(Path("weed")) if "localSocket" in arg]


def test_credentials_become_the_s3_config() -> None:
    config = SPEC.s3_config()
    assert config.endpoint == "http://127.0.0.1:18333"
    assert config.access_key_id is not None and config.access_key_id.get_secret_value() == "TRACEK"
