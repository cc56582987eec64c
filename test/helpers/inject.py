"""Send hand-made TCP/IP frames out of a network interface (AF_PACKET), for capture tests that
need what a healthy kernel never sends on a short veth: out-of-order, duplicated and retransmitted
segments. Run it inside a lab namespace only. Input (stdin): JSON
{"iface": "...", "frames": [{"src","dst","sport","dport","seq","ack","flags","data"}]} where flags
is a string of S A F R P and data is latin-1 text. Checksums are left zero: capture does not check
them and the receiving kernel drops the frames, which is what a test wants."""
import ipaddress, json, socket, struct, sys

def tcp(f):
    flags = sum({'F': 1, 'S': 2, 'R': 4, 'P': 8, 'A': 16}[c] for c in f.get('flags', 'A'))
    data = f.get('data', '').encode('latin-1')
    return struct.pack('!HHIIBBHHH', f['sport'], f['dport'], f.get('seq', 0) & 0xffffffff,
                       f.get('ack', 0) & 0xffffffff, 5 << 4, flags, 65535, 0, 0) + data

def frame(f):
    seg = tcp(f)
    src, dst = ipaddress.ip_address(f['src']), ipaddress.ip_address(f['dst'])
    if src.version == 4:
        ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(seg), 1, 0x4000, 64, 6, 0, src.packed, dst.packed)
        ethertype = 0x0800
    else:
        ip = struct.pack('!IHBB16s16s', 6 << 28, len(seg), 6, 64, src.packed, dst.packed)
        ethertype = 0x86dd
    return b'\xff' * 6 + b'\x02\x00\x00\x00\x00\x01' + struct.pack('!H', ethertype) + ip + seg

spec = json.load(sys.stdin)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((spec['iface'], 0))
for f in spec['frames']:
    s.send(frame(f))
print(json.dumps({'sent': len(spec['frames'])}))
