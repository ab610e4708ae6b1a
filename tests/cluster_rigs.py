"""Rig files of a main PC with other PCs on the network, shared by the cluster planning and wizard tests."""

# a main PC (RTX 2080) with a gaming PC (RTX 3060 over fast LAN) and a laptop sharing its RAM (slower link)
MAIN_AND_TWO_NODES = """
name = "Main PC"
[system]
ram_gib = 32
ram_bandwidth_gbs = 40
physical_cores = 8
[[gpu]]
name = "NVIDIA GeForce RTX 2080"
vram_mib = 8192
[[node]]
address = "192.168.1.20:50052"
name = "gaming-pc"
rtt_ms = 0.5
throughput_mbs = 112
[[node.device]]
name = "NVIDIA GeForce RTX 3060"
total_mib = 12288
free_mib = 11800
[[node]]
address = "192.168.1.21:50052"
name = "laptop"
rtt_ms = 2
throughput_mbs = 50
[[node.device]]
name = "Laptop RAM"
cpu = true
total_mib = 32768
free_mib = 20000
bandwidth_gbs = 50
"""
