"""The capture scripts' parser (rtnl/, tc/, conntrack/ capture.sh): reads
``strace -e write=all`` output on stdin and prints the last message of
netlink type ARGV[1] sent, as hex lines of 16 bytes under the header line
ARGV[2] (the command that sent it).  A buffer starts at a syscall line or at
strace's `` * N bytes in buffer`` line (sendmsg: one per iovec)."""

import re
import struct
import sys

mtype, header = int(sys.argv[1], 0), sys.argv[2]
buffers: list[bytearray] = []
for line in sys.stdin:
    if re.match(r" \| [0-9a-f]{5}  ", line):
        if buffers:
            buffers[-1] += bytes.fromhex("".join(line[10:58].split()))
    else:  # a syscall, or sendmsg's next buffer
        buffers.append(bytearray())
data = [b for b in buffers if len(b) >= 16 and struct.unpack_from("=H", b, 4)[0] == mtype][-1]
print(header)
for i in range(0, len(data), 16):
    print(data[i:i + 16].hex(" "))
