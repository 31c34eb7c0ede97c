"""SM2-with-SM3 signatures by an independent implementation (Python gmssl),
default user ID 1234567812345678, signatures as r||s hex.

Usage:
  sm2_interop.py verify PUBLIC_XY_HEX MESSAGE_HEX SIGNATURE_HEX   (exit 0 when valid)
  sm2_interop.py sign PRIVATE_HEX PUBLIC_XY_HEX MESSAGE_HEX        (prints the signature hex)
"""
import sys

from gmssl import func, sm2


def crypt_sm2(private, public_xy: str) -> sm2.CryptSM2:
    """A CryptSM2 over the public key x||y (128 hex digits, no 04 prefix).

    gmssl's constructor strips a "04" point prefix with `lstrip("04")`,
    which removes every leading '0' and '4' character: when x itself starts
    with the byte 0x04 (one key in 256) the key is mangled and a correct
    signature fails. So the key is set after construction, as given.
    """
    if len(public_xy) != 128:
        print(f"public key must be x||y, 128 hex digits (got {len(public_xy)})", file=sys.stderr)
        raise SystemExit(2)
    crypt = sm2.CryptSM2(private_key=private, public_key="")
    crypt.public_key = public_xy
    return crypt


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "verify" and len(sys.argv) == 5:
        public, message, signature = sys.argv[2:5]
        crypt = crypt_sm2(None, public)
        return 0 if crypt.verify_with_sm3(signature, bytes.fromhex(message)) else 1
    if mode == "sign" and len(sys.argv) == 5:
        private, public, message = sys.argv[2:5]
        crypt = crypt_sm2(private, public)
        print(crypt.sign_with_sm3(bytes.fromhex(message), func.random_hex(crypt.para_len)))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
