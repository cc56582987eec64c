"""Send exact request bytes over real TCP connections, one connection per request: the hostile and
odd heads real clients can send. Run it inside a lab namespace only. Input (stdin): JSON
{"host": "...", "port": 80, "token_first": true, "requests": ["latin-1 text", ...]} where "{TOKEN}"
in a request is replaced by a token got from PUT /latest/api/token first (when token_first).
Output (stdout): JSON {"token_port": n, "results": [{"port": local port, "status": first status
line or null}]}. The token value is never printed."""
import json, socket, sys

spec = json.load(sys.stdin)
host, port = spec['host'], spec.get('port', 80)

def exchange(data):
    s = socket.create_connection((host, port), timeout=5)
    local = s.getsockname()[1]
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    got = b''
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    first = got.split(b'\r\n', 1)[0].decode('latin-1') if got else None
    return local, first, got

token = ''
token_port = None
if spec.get('token_first'):
    token_port, _, got = exchange(b'PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n'
                                  b'X-aws-ec2-metadata-token-ttl-seconds: 300\r\nConnection: close\r\n\r\n')
    token = got.split(b'\r\n\r\n', 1)[1].decode('latin-1').strip()
    if not token:
        sys.exit('no token from the stand-in')

results = []
for r in spec['requests']:
    local, first, _ = exchange(r.replace('{TOKEN}', token).encode('latin-1'))
    results.append({'port': local, 'status': first})
print(json.dumps({'token_port': token_port, 'results': results}))
