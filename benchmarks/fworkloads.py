"""Task functions of benchmarks/features.py (module level: workers import them)."""


def inc(x):
    return x + 1


def inc_state(state, x):
    state["n"] = state.get("n", 0) + 1
    return x + 1


def init_state(state):
    state["n"] = 0
