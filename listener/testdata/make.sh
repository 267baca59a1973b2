#!/usr/bin/env bash
# Test-only TLS files: a CA and a localhost certificate it signs (valid for
# 100 years). Never use these keys for anything but tests; they are public.
# Regenerate with: bash listener/testdata/make.sh
set -euo pipefail
cd "$(dirname "$0")"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 36500 \
  -subj "/CN=Flywheel test CA" -keyout ca.key -out ca.pem \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 36500 \
  -out server.pem -extfile <(printf '%s\n' \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" \
    "subjectAltName=DNS:localhost,IP:127.0.0.1") 2>/dev/null
# A rotated pair for the reload test: a second CA and a localhost
# certificate it signs, with its own key.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 36500 \
  -subj "/CN=Flywheel rotated test CA" -keyout rotated-ca.key -out rotated-ca.pem \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=localhost" -keyout rotated.key -out rotated.csr 2>/dev/null
openssl x509 -req -in rotated.csr -CA rotated-ca.pem -CAkey rotated-ca.key -CAcreateserial -days 36500 \
  -out rotated.pem -extfile <(printf '%s\n' \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" \
    "subjectAltName=DNS:localhost,IP:127.0.0.1") 2>/dev/null
# A second, unrelated key: a key that does not fit server.pem.
openssl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:P-256 -out other.key 2>/dev/null
rm -f server.csr ca.srl ca.key rotated.csr rotated-ca.srl rotated-ca.key
chmod 600 server.key other.key rotated.key
