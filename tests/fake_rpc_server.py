"""A stand-in for llama.cpp's rpc-server (`rpc-server -H HOST -p PORT`): a real process that speaks the ggml-rpc
wire format far enough for Phoenix to share it (HELLO 4.0.1, DEVICE_COUNT, GET_DEVICE_MEMORY) and prints the
engine's start-up line. No engine can be built on every test machine; this one starts in a blink."""

import socket
import struct
import sys
import threading

GIB = 1 << 30


def serve(conn: socket.socket) -> None:
    def read(n):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    try:
        while True:
            cmd = read(1)[0]
            (size,) = struct.unpack("<Q", read(8))
            read(size)
            if cmd == 14:  # HELLO
                reply = bytes([4, 0, 1, 0]) + bytes(24) if size else bytes([4, 0, 1])
            elif cmd == 15:  # DEVICE_COUNT
                reply = struct.pack("<I", 1)
            elif cmd == 11:  # GET_DEVICE_MEMORY
                reply = struct.pack("<QQ", 6 * GIB, 8 * GIB)
            else:
                return
            conn.sendall(struct.pack("<Q", len(reply)) + reply)
    except (EOFError, OSError):
        pass
    finally:
        conn.close()


def main() -> None:
    args = sys.argv[1:]
    host = args[args.index("-H") + 1] if "-H" in args else "127.0.0.1"
    port = int(args[args.index("-p") + 1]) if "-p" in args else 50052
    srv = socket.create_server((host, port))
    print("Starting RPC server v4.0.1", flush=True)
    # then ggml-rpc's own lines (ggml-rpc.cpp, ggml_backend_rpc_start_server), the device as GET_DEVICE_MEMORY says
    print(f"  endpoint       : {host}:{port}\n  local cache    : n/a\nDevices:\n"
          "  CPU: Fake CPU (8192 MiB, 6144 MiB free)\n  transport      : TCP", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
