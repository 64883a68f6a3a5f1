// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

interface ITraceToken {
    function transfer(address to, uint256 value) external returns (bool);
    function transferFrom(address from, address to, uint256 value) external returns (bool);
}

/// @title TraceStaking
/// @notice Delegation of TraceToken to validators, for the Trace dev chain. Delegating pulls the
///         tokens with transferFrom (approve this contract first); undelegating returns them.
contract TraceStaking {
    ITraceToken public immutable token;

    uint256 public totalStaked;
    /// @notice Total stake delegated to each validator.
    mapping(address => uint256) public stakeOf;
    /// @notice Stake of each (delegator, validator) pair.
    mapping(address => mapping(address => uint256)) public delegationOf;

    event Delegated(address indexed delegator, address indexed validator, uint256 amount);
    event Undelegated(address indexed delegator, address indexed validator, uint256 amount);

    error ZeroAmount();
    error ZeroAddress();
    error InsufficientDelegation(address delegator, address validator, uint256 delegated, uint256 needed);
    error TokenTransferFailed();

    constructor(ITraceToken token_) {
        if (address(token_) == address(0)) revert ZeroAddress();
        token = token_;
    }

    function delegate(address validator, uint256 amount) external {
        if (validator == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        if (!token.transferFrom(msg.sender, address(this), amount)) revert TokenTransferFailed();
        delegationOf[msg.sender][validator] += amount;
        stakeOf[validator] += amount;
        totalStaked += amount;
        emit Delegated(msg.sender, validator, amount);
    }

    function undelegate(address validator, uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        uint256 delegated = delegationOf[msg.sender][validator];
        if (delegated < amount) revert InsufficientDelegation(msg.sender, validator, delegated, amount);
        unchecked {
            delegationOf[msg.sender][validator] = delegated - amount;
            stakeOf[validator] -= amount;
            totalStaked -= amount;
        }
        if (!token.transfer(msg.sender, amount)) revert TokenTransferFailed();
        emit Undelegated(msg.sender, validator, amount);
    }
}
