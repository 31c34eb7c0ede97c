"""Verifies a Zhengzhao presentation with the SD-JWT reference implementation
(`sd-jwt` on PyPI, OpenWallet Foundation), key binding included.

usage: sdjwt_verify.py PRESENTATION_FILE JWKS_FILE AUDIENCE NONCE
Prints the verified claims as JSON and exits 0; exits 1 when it does not verify.
"""
import json
import sys

from jwcrypto.jwk import JWK
from sd_jwt.verifier import SDJWTVerifier


def main() -> int:
    presentation = open(sys.argv[1], encoding="ascii").read().strip()
    keys = json.load(open(sys.argv[2], encoding="utf-8"))["keys"]
    audience, nonce = sys.argv[3], sys.argv[4]

    def issuer_key(issuer, header):
        for k in keys:
            if k["kid"] == header.get("kid") and k.get("issuer") == issuer:
                return JWK.from_json(json.dumps({x: k[x] for x in ("kty", "crv", "x", "y")}))
        raise ValueError(f"no key {header.get('kid')} of issuer {issuer}")

    try:
        verifier = SDJWTVerifier(presentation, issuer_key, audience, nonce)
        claims = verifier.get_verified_payload()
    except Exception as e:  # the reference implementation raises several kinds
        print(f"not verified: {e!r}", file=sys.stderr)
        return 1
    print(json.dumps(claims, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
