"""koboldcpp: its profiles (profile.py) and its server (server.py)."""
