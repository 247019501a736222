"""The compiler proper: IR, op definitions and their rules, derive, passes, the IR interpreter.

Nothing here imports torch or triton: it turns text into graphs and graphs into graphs.
"""
