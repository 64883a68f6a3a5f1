#!/usr/bin/env node
// Compiles the dev-chain contracts offline with the pinned solc-js and writes committed artifacts.
//
//   node operators/devchain/build_contracts.js          (from the repository root)
//
// Each artifact holds the ABI, the creation bytecode, the solc version, the sha256 of the source
// (a unit test compares it with the current .sol file to catch a stale artifact), and the
// function selectors and event topic0 values, so Python needs no keccak implementation.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const HERE = __dirname;
const ROOT = path.resolve(HERE, '..', '..');
const requireFromRoot = (name) => require(require.resolve(name, { paths: [ROOT] }));
const solc = requireFromRoot('solc');
// js-sha3 is solc-js's own dependency (pinned by package-lock.json), used for event topics.
const { keccak256 } = requireFromRoot('js-sha3');

const CONTRACTS = ['TraceToken', 'TraceStaking'];
const SOURCE_DIR = path.join(HERE, 'contracts');
const ARTIFACT_DIR = path.join(HERE, 'artifacts');

function canonicalType(param) {
  if (!param.type.startsWith('tuple')) return param.type;
  const inner = param.components.map(canonicalType).join(',');
  return `(${inner})${param.type.slice('tuple'.length)}`;
}

function eventTopics(abi) {
  const topics = {};
  for (const item of abi) {
    if (item.type !== 'event') continue;
    const signature = `${item.name}(${item.inputs.map(canonicalType).join(',')})`;
    topics[signature] = `0x${keccak256(signature)}`;
  }
  return topics;
}

function main() {
  const sources = {};
  for (const name of CONTRACTS) {
    sources[`${name}.sol`] = { content: fs.readFileSync(path.join(SOURCE_DIR, `${name}.sol`), 'utf8') };
  }
  const input = {
    language: 'Solidity',
    sources,
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: 'cancun',
      metadata: { bytecodeHash: 'none' },
      outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.methodIdentifiers'] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (output.errors || []).filter((e) => e.severity === 'error');
  for (const e of output.errors || []) console.error(e.formattedMessage || e.message);
  if (errors.length > 0) {
    console.error(`error: solc reported ${errors.length} error(s)`);
    process.exit(1);
  }
  fs.mkdirSync(ARTIFACT_DIR, { recursive: true });
  for (const name of CONTRACTS) {
    const file = `${name}.sol`;
    const compiled = output.contracts[file][name];
    const selectors = {};
    for (const [signature, id] of Object.entries(compiled.evm.methodIdentifiers)) {
      selectors[signature] = `0x${id}`;
    }
    const artifact = {
      contractName: name,
      sourceFile: `contracts/${file}`,
      sourceSha256: crypto.createHash('sha256').update(fs.readFileSync(path.join(SOURCE_DIR, file))).digest('hex'),
      solcVersion: solc.version(),
      settings: { optimizer: input.settings.optimizer, evmVersion: input.settings.evmVersion },
      abi: compiled.abi,
      bytecode: `0x${compiled.evm.bytecode.object}`,
      selectors,
      eventTopics: eventTopics(compiled.abi),
    };
    const target = path.join(ARTIFACT_DIR, `${name}.json`);
    fs.writeFileSync(target, `${JSON.stringify(artifact, null, 2)}\n`);
    console.log(`wrote ${path.relative(ROOT, target)} (${(compiled.evm.bytecode.object.length / 2) | 0} bytes)`);
  }
}

main();
