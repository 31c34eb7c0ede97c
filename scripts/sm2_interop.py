"""SM2-with-SM3 signatures by an independent implementation (Python gmssl),
default user ID 1234567812345678, signatures as r||s hex.

Usage:
  sm2_interop.py verify PUBLIC_XY_HEX MESSAGE_HEX SIGNATURE_HEX   (exit 0 when valid)
  sm2_interop.py sign PRIVATE_HEX PUBLIC_XY_HEX MESSAGE_HEX        (prints the signature hex)
"""
import sys

from gmssl import func, sm2


def main() -> int:
    mode = sys.argv[1]
    if mode == "verify":
        public, message, signature = sys.argv[2:5]
        crypt = sm2.CryptSM2(private_key=None, public_key=public)
        return 0 if crypt.verify_with_sm3(signature, bytes.fromhex(message)) else 1
    if mode == "sign":
        private, public, message = sys.argv[2:5]
        crypt = sm2.CryptSM2(private_key=private, public_key=public)
        print(crypt.sign_with_sm3(bytes.fromhex(message), func.random_hex(crypt.para_len)))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
