"""LabelLoop infrastructure: one thin stack composing one construct per concern."""

import os

# jsii prints a Node end-of-life banner on every import; the CLI still works on Node 20.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
