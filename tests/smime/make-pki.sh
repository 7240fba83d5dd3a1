#!/usr/bin/env bash
# Makes a test PKI and S/MIME messages of every kind popspool handles
# (README, "S/MIME"), with the openssl CLI alone. The suite
# (tests/suite/smime.rs) runs it once per test run into a scratch directory.
#
#   bash tests/smime/make-pki.sh OUTDIR
#
# OUTDIR/pki: root.crt (the trust anchor, for smime_ca_file), inter.crt,
#   recipient.crt with its key as PKCS#8 (recipient.key), traditional
#   (recipient-trad.key) and encrypted PKCS#8 (recipient-enc.key, passphrase
#   in key.pass); recipient.p12 (AES) and recipient-legacy.p12 (RC2-40 and
#   3DES, as old Windows exports), passphrase in p12.pass; recipient-soon.crt
#   (the same key, expiring in 10 days); other.crt/.key (another recipient).
# OUTDIR/msg: one message per case, named after it (see the list at the end).
set -euo pipefail
out=${1:?usage: make-pki.sh OUTDIR}
mkdir -p "$out/pki" "$out/msg"
cd "$out/pki"
export OPENSSL_CONF=/dev/null
ssl() { openssl "$@" 2>>"$out/openssl.log"; }
legacy=(-provider legacy -provider default)

cat >ext.cnf <<'EOF'
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[email]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment
extendedKeyUsage = emailProtection
subjectAltName = email:copy
[server]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = email:copy
EOF

# key NAME rsa|ec
key() {
	case $2 in
	rsa) ssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1.key" ;;
	ec) ssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" ;;
	esac
}

# leaf NAME EMAIL SECTION DAYS [ISSUER]: a certificate for NAME.key
leaf() {
	ssl req -new -key "$1.key" -subj "/CN=$1/emailAddress=$2" -out "$1.csr"
	ssl x509 -req -in "$1.csr" -CA "${5:-inter}.crt" -CAkey "${5:-inter}.key" \
		-set_serial "0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" \
		-days "$4" -extfile ext.cnf -extensions "$3" -out "$1.crt"
}

key root rsa
ssl req -x509 -new -key root.key -subj "/CN=popspool test SMIME root" -days 3650 \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
	-out root.crt
key inter rsa
ssl req -new -key inter.key -subj "/CN=popspool test SMIME intermediate" -out inter.csr
ssl x509 -req -in inter.csr -CA root.crt -CAkey root.key -set_serial 2 -days 3650 \
	-extfile ext.cnf -extensions ca -out inter.crt

key recipient rsa
leaf recipient recipient@example.com email 825
cp recipient.csr recipient-soon.csr
ssl x509 -req -in recipient.csr -CA inter.crt -CAkey inter.key -set_serial 77 -days 10 \
	-extfile ext.cnf -extensions email -out recipient-soon.crt
key other rsa
leaf other other@example.com email 825
printf 'key-pass-1\n' >key.pass
printf 'p12-pass-1\n' >p12.pass
ssl pkcs8 -topk8 -in recipient.key -v2 aes-256-cbc -passout file:key.pass -out recipient-enc.key
ssl pkey -in recipient.key -traditional -out recipient-trad.key 2>/dev/null ||
	ssl rsa -in recipient.key -traditional -out recipient-trad.key
ssl pkcs12 -export -in recipient.crt -inkey recipient.key -certfile inter.crt \
	-passout file:p12.pass -out recipient.p12
ssl pkcs12 -export -legacy "${legacy[@]}" -in recipient.crt -inkey recipient.key \
	-passout file:p12.pass -out recipient-legacy.p12

key signer rsa
leaf signer sender@example.org email 825
key signer-ec ec
leaf signer-ec sender@example.org email 825
key signer-usage rsa
leaf signer-usage sender@example.org server 825
key signer-self rsa
ssl req -x509 -new -key signer-self.key -subj "/CN=signer-self/emailAddress=sender@example.org" \
	-days 825 -addext "subjectAltName=email:sender@example.org" -out signer-self.crt
# An expired signer: `openssl ca` can set dates in the past, `x509 -req` cannot.
key signer-old rsa
ssl req -new -key signer-old.key -subj "/CN=signer-old/emailAddress=sender@example.org" -out signer-old.csr
mkdir -p ca && : >ca/index.txt && echo 1001 >ca/serial
cat >ca.cnf <<'EOF'
[ca]
default_ca = d
[d]
database = ca/index.txt
serial = ca/serial
new_certs_dir = ca
default_md = sha256
policy = p
unique_subject = no
[p]
commonName = supplied
emailAddress = optional
EOF
ssl ca -batch -config ca.cnf -cert inter.crt -keyfile inter.key -in signer-old.csr \
	-startdate 20200101000000Z -enddate 20210101000000Z -extfile ext.cnf -extensions email \
	-notext -out signer-old.crt

chmod 600 ./*.key ./*.p12 ./*.pass
cd ../msg
from=sender@example.org
to=recipient@example.com
crlf() { sed 's/$/\r/'; }

# The inner message: a body and an attachment, CRLF as S/MIME canonical form.
{
	printf 'Content-Type: multipart/mixed; boundary="inner-b"\n\n'
	printf -- '--inner-b\nContent-Type: text/plain; charset=utf-8\n\n'
	printf 'Hello from the S/MIME test.\n'
	printf -- '--inner-b\nContent-Type: application/pdf; name="report.pdf"\n'
	printf 'Content-Disposition: attachment; filename="report.pdf"\nContent-Transfer-Encoding: base64\n\n'
	printf '%%PDF-1.4 test report\n' | base64
	printf -- '--inner-b--\n'
} | crlf >inner.eml

{
	printf 'From: %s\nTo: %s\nSubject: plain\nMIME-Version: 1.0\n' "$from" "$to"
	printf 'Content-Type: text/plain\n\nNot signed, not encrypted.\n'
} >plain.eml

P=../pki
# enc NAME CIPHER [extra args...]: enveloped for the recipient
enc() {
	local name=$1 cipher=$2
	shift 2
	ssl cms -encrypt -in inner.eml "-$cipher" "$@" -from "$from" -to "$to" -subject "$name" \
		"$P/recipient.crt" >"$name.eml"
}
enc enc-aes128-cbc aes-128-cbc
enc enc-aes192-cbc aes-192-cbc
enc enc-aes256-cbc aes-256-cbc
enc enc-des3 des-ede3-cbc
enc enc-rc2 rc2-cbc "${legacy[@]}"
enc enc-rc2-40 rc2-40-cbc "${legacy[@]}"
enc enc-aes128-gcm aes-128-gcm
enc enc-aes256-gcm aes-256-gcm
# Streamed: BER with indefinite lengths, as some mailers write it.
enc enc-ber aes-128-cbc -stream
sed 's#application/pkcs7-mime#application/x-pkcs7-mime#; s/^Subject: .*/Subject: enc-x/' enc-aes128-cbc.eml >enc-x.eml
ssl cms -encrypt -in inner.eml -aes-256-cbc "$P/other.crt" >enc-other.eml.tmp
{
	printf 'From: %s\nTo: %s\nSubject: enc-other\n' "$from" "$to"
	cat enc-other.eml.tmp
} >enc-other.eml
rm enc-other.eml.tmp
# A corrupt envelope: the middle of its base64 replaced.
awk 'BEGIN{n=0} /^$/{body=1} body && length($0)==64 {n++; if (n==6) {$0="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}} {print}' \
	enc-aes256-cbc.eml | sed 's/^Subject: .*/Subject: enc-corrupt/' >enc-corrupt.eml
# A .p7m sent as the whole body (application/octet-stream).
ssl cms -encrypt -in inner.eml -aes-128-cbc -outform DER "$P/recipient.crt" >env.der
{
	printf 'From: %s\nTo: %s\nSubject: enc-p7m\nMIME-Version: 1.0\n' "$from" "$to"
	printf 'Content-Type: application/octet-stream; name="smime.p7m"\n'
	printf 'Content-Disposition: attachment; filename="smime.p7m"\nContent-Transfer-Encoding: base64\n\n'
	base64 -w 64 env.der
} >enc-p7m.eml
rm env.der

# sig NAME SIGNER [extra args...]: signed, detached unless -nodetach is given
sig() {
	local name=$1 signer=$2
	shift 2
	ssl cms -sign -in inner.eml -signer "$P/$signer.crt" -inkey "$P/$signer.key" \
		-certfile "$P/inter.crt" "$@" -from "$from" -to "$to" -subject "$name" >"$name.eml"
}
sig sig-detached signer -md sha256
sig sig-opaque signer -md sha256 -nodetach
sig sig-opaque-ber signer -md sha256 -nodetach -stream
sig sig-sha1 signer -md sha1
sig sig-sha512 signer -md sha512
sig sig-pss signer -md sha256 -keyopt rsa_padding_mode:pss
sig sig-ec signer-ec -md sha384
sig sig-expired signer-old -md sha256
sig sig-usage signer-usage -md sha256
sig sig-self signer-self -md sha256
sig sig-nocerts signer -md sha256 -nocerts
sed 's#application/pkcs7-signature#application/x-pkcs7-signature#g' sig-detached.eml |
	sed 's/^Subject: .*/Subject: sig-x/' >sig-x.eml
sed 's/^Subject: .*/Subject: sig-noprotocol/; s/protocol="application\/pkcs7-signature"; //' \
	sig-detached.eml >sig-noprotocol.eml
sed 's/^Subject: .*/Subject: sig-other-from/; s/^From: .*/From: someone@example.net/' \
	sig-detached.eml >sig-other-from.eml
# Altered after signing: one word of the signed body changed.
sed 's/Hello from the S\/MIME test/Hello from the S\/MIME TEST/; s/^Subject: .*/Subject: sig-tampered/' \
	sig-detached.eml >sig-tampered.eml

# Certificates handed over (smime-type=certs-only): no signature.
ssl crl2pkcs7 -nocrl -certfile "$P/signer.crt" -outform DER -out certs.der
{
	printf 'From: %s\nTo: %s\nSubject: certs-only\nMIME-Version: 1.0\n' "$from" "$to"
	printf 'Content-Type: application/pkcs7-mime; smime-type=certs-only; name="smime.p7c"\n'
	printf 'Content-Transfer-Encoding: base64\n\n'
	base64 -w 64 certs.der
} >certs-only.eml
rm certs.der

# Sign, then encrypt; encrypt, then sign.
ssl cms -sign -in inner.eml -signer "$P/signer.crt" -inkey "$P/signer.key" -certfile "$P/inter.crt" >signed.tmp
ssl cms -encrypt -in signed.tmp -aes-256-cbc -from "$from" -to "$to" -subject sign-then-encrypt \
	"$P/recipient.crt" >sign-then-encrypt.eml
ssl cms -encrypt -in inner.eml -aes-256-gcm "$P/recipient.crt" >enveloped.tmp
ssl cms -sign -in enveloped.tmp -signer "$P/signer.crt" -inkey "$P/signer.key" -certfile "$P/inter.crt" \
	-from "$from" -to "$to" -subject encrypt-then-sign >encrypt-then-sign.eml
# Deeper than popspool unwraps (MAX_LAYERS = 4): five opaque signatures.
cp inner.eml layer.tmp
for _ in 1 2 3 4 5; do
	ssl cms -sign -nodetach -in layer.tmp -signer "$P/signer.crt" -inkey "$P/signer.key" >layer.next
	mv layer.next layer.tmp
done
{
	printf 'From: %s\nTo: %s\nSubject: deep\n' "$from" "$to"
	cat layer.tmp
} >deep.eml
rm -f ./*.tmp
ls >/dev/null
