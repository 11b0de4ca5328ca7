"""The paper (TD-MPC2, Sec. 3): config, network pieces, the world model, losses, MPPI planning, the
one update and the memory estimate; plain PyTorch, no IO, no agent."""
