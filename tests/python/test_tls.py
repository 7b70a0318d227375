"""Triton's Python clients over TLS against Vane: https and grpcs with the test's CA, and mutual TLS.

Run by `cargo test` (tests/e2e/tls.rs), which makes a CA and certificates with openssl, starts Vane with
--tls-cert/--tls-key (and --tls-client-ca for the mutual case) and passes: VANE_HTTPS / VANE_GRPCS (addresses),
VANE_CA (the CA's PEM), and for mutual TLS VANE_CLIENT_CERT / VANE_CLIENT_KEY.
"""
import os
import unittest

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

HTTPS = os.environ["VANE_HTTPS"]
GRPCS = os.environ["VANE_GRPCS"]
CA = os.environ["VANE_CA"]
CLIENT_CERT = os.environ.get("VANE_CLIENT_CERT")
CLIENT_KEY = os.environ.get("VANE_CLIENT_KEY")
ROW = np.zeros((1, 30), dtype=np.float32)


def http_client(with_cert):
    options = {"ca_certs": CA}
    if with_cert:
        options.update(certfile=CLIENT_CERT, keyfile=CLIENT_KEY)
    return httpclient.InferenceServerClient(HTTPS, ssl=True, ssl_options=options)


def grpc_client(with_cert):
    if with_cert:
        return grpcclient.InferenceServerClient(GRPCS, ssl=True, root_certificates=CA, private_key=CLIENT_KEY,
                                                certificate_chain=CLIENT_CERT)
    return grpcclient.InferenceServerClient(GRPCS, ssl=True, root_certificates=CA)


def infer(client, module):
    tensor = module.InferInput("input", [1, 30], "FP32")
    tensor.set_data_from_numpy(ROW)
    return client.infer("breast_cancer", [tensor]).as_numpy("label")


class Tls(unittest.TestCase):
    def test_https_and_grpcs_serve_inference(self):
        with_cert = CLIENT_CERT is not None
        self.assertTrue(http_client(with_cert).is_server_ready())
        self.assertEqual(infer(http_client(with_cert), httpclient).shape, (1,))
        self.assertTrue(grpc_client(with_cert).is_server_ready())
        self.assertEqual(infer(grpc_client(with_cert), grpcclient).shape, (1,))

    @unittest.skipUnless(CLIENT_CERT, "mutual TLS only")
    def test_a_client_without_a_certificate_is_refused(self):
        with self.assertRaises(Exception):
            http_client(False).is_server_live()
        with self.assertRaises(Exception):
            grpc_client(False).is_server_live(client_timeout=10)


if __name__ == "__main__":
    unittest.main(verbosity=2)
