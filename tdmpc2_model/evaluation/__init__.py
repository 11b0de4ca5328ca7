"""Acting in environments: evaluation episodes of an agent, a task set's normalized score,
and the allocator setting long evaluations need."""
