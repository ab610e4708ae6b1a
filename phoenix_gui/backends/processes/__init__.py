"""The one process, port and lifecycle layer of the backends: running a program as a supervised process
tree (process.py), picking and checking ports (ports.py), and the state-machine machinery every lifecycle
uses (states.py: the launch, the share host, the tuner). It imports nothing else of the backends."""
