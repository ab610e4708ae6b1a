"""The one process, port and lifecycle layer of the backends: running a program as a supervised process
tree (process.py; guard.py keeps it from outliving Phoenix, output.py bounds its lines and log), picking and
checking ports (ports.py), and the state-machine machinery every lifecycle uses (states.py: the launch, the
share host, the tuner; wait_while, the command line's one wait). It imports nothing else of the backends."""
