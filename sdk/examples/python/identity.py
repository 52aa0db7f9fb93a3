"""Example Python plugin: keeps every event unchanged (the baseline for
benchmarks: what calling a Python plugin costs with nothing to do)."""


def process(event):
    return event
