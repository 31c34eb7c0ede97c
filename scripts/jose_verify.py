"""Verify a Zhengzhao licence JWS with an independent JOSE implementation.

Usage: jose_verify.py JWKS_FILE JWS_FILE
Prints the licence identifier and exits 0 when the signature verifies under
the key the JWS names; exits 1 otherwise.
"""
import json
import sys

from jwcrypto import jwk, jws


def main() -> int:
    keys = jwk.JWKSet.from_json(open(sys.argv[1], encoding="utf-8").read())
    token = open(sys.argv[2], encoding="utf-8").read().strip()
    obj = jws.JWS()
    obj.deserialize(token)
    kid = obj.jose_header.get("kid")
    key = keys.get_key(kid)
    if key is None:
        print(f"no key {kid!r} in the JWKS", file=sys.stderr)
        return 1
    try:
        obj.verify(key, alg="ES256")
    except jws.InvalidJWSSignature as e:
        print(f"signature does not verify: {e}", file=sys.stderr)
        return 1
    payload = json.loads(obj.payload)
    print(payload.get("identifier") or payload["licence"]["identifier"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
