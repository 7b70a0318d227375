"""A TLS smart-HTTP Git server for the reconciler's transport tests: `git http-backend` (Git's own CGI) behind HTTP
Basic auth that accepts one token as the password, as GitHub, GitLab and Gitea accept tokens. Paths under
`/files/` are served from ROOT/files without auth, as an object store's presigned URLs are; `/redirect-http/NAME`
and `/redirect-https/NAME` redirect to `/files/NAME` over plain http or https.

Usage: git_https_server.py ROOT CERT KEY TOKEN
CERT and KEY given as "-" serve plain HTTP (to test that a client never sends the token without TLS). Serves the repositories under ROOT on 127.0.0.1 with a free port, prints the port on stdout once listening, and
serves until killed. Standard library only.
"""

import base64
import http.server
import os
import ssl
import subprocess
import sys

ROOT, CERT, KEY, TOKEN = sys.argv[1:5]


class GitHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.serve()

    def do_POST(self):
        self.serve()

    def log_message(self, format, *args):
        # Quiet: the test's own assertions say what happened.
        pass

    def authorized(self):
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            _, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return password == TOKEN

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def serve(self):
        body = self.body()
        if self.path.startswith("/files/"):
            self.serve_file()
            return
        if self.path.startswith("/redirect-http/") or self.path.startswith("/redirect-https/"):
            # A redirect to the same file on this server, over the scheme the path names.
            scheme, _, name = self.path[len("/redirect-"):].partition("/")
            port = self.server.server_address[1]
            self.send_response(302)
            self.send_header("Location", f"{scheme}://127.0.0.1:{port}/files/{name}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if not self.authorized():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        env = dict(
            os.environ,
            GIT_PROJECT_ROOT=ROOT,
            GIT_HTTP_EXPORT_ALL="1",
            PATH_INFO=path,
            QUERY_STRING=query,
            REQUEST_METHOD=self.command,
            CONTENT_TYPE=self.headers.get("Content-Type", ""),
            CONTENT_LENGTH=str(len(body)),
            REMOTE_USER="token",
            GIT_PROTOCOL=self.headers.get("Git-Protocol", ""),
        )
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False).stdout
        sep = b"\r\n\r\n" if b"\r\n\r\n" in out else b"\n\n"
        head, _, payload = out.partition(sep)
        status = 200
        headers = []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


    def serve_file(self):
        name = self.path[len("/files/"):]
        path = os.path.join(ROOT, "files", name)
        if "/" in name or ".." in name or not os.path.isfile(path):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with open(path, "rb") as f:
            payload = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def main():
    server = http.server.HTTPServer(("127.0.0.1", 0), GitHandler)
    if CERT != "-":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(CERT, KEY)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
