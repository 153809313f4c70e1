from cnnx.cli import entry

entry()
