"""llama.cpp's llama-server: its profiles (profile.py) and its server (server.py)."""
