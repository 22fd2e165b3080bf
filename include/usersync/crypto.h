/*
** crypto.h: what OAuth 2.0 private_key_jwt and DPoP need from OpenSSL's
** libcrypto: private keys from PEM (RSA or EC P-256), their public JWK,
** compact JWS signing (RS256 / ES256), SHA-256, base64url, random ids.
**
** Strings returned as char * are NUL-terminated, malloc'd, owned by the
** caller (free()). Errors are written into a caller buffer and never contain
** key material.
*/
#ifndef USERSYNC_CRYPTO_H
#define USERSYNC_CRYPTO_H
#include <stddef.h>

struct us_key;

/* Loads a PEM private key (PKCS#8 or traditional RSA/EC). Returns NULL and
** fills err on failure. The key must be RSA (>= 2048 bits) or EC P-256. */
struct us_key *us_key_load_pem(const char *pem, size_t len, char *err, size_t errlen);
/* A new EC P-256 key from the OS CSPRNG (e.g. a DPoP key made per process).
** NULL and err filled on failure. */
struct us_key *us_key_generate_p256(char *err, size_t errlen);
void us_key_free(struct us_key *key);

/* "RS256" or "ES256". */
const char *us_key_alg(const struct us_key *key);

/* The public key as a JWK JSON object: {"kty":"RSA","n":..,"e":..} or
** {"kty":"EC","crv":"P-256","x":..,"y":..}. NULL on allocation failure. */
char *us_key_public_jwk(const struct us_key *key);

/* RFC 7638 thumbprint of the public key (base64url SHA-256 of the canonical JWK). */
char *us_key_thumbprint(const struct us_key *key);

/* Signs header_json and claims_json (already serialised JSON objects) into a
** compact JWS "b64(header).b64(claims).b64(signature)". ES256 signatures are
** the raw r||s form JOSE requires. NULL and err filled on failure. */
char *us_jwt_sign(const struct us_key *key, const char *header_json, const char *claims_json,
                  char *err, size_t errlen);

/* SHA-256 of data into out[32]. */
void us_sha256(const void *data, size_t len, unsigned char out[32]);

/* 1 when the SHA-256 of data equals want (a digest us_sha256 made), compared
** in constant time: hashing first means the time says nothing about how much
** of a secret matched, nor its length. */
int us_sha256_eq(const void *data, size_t len, const unsigned char want[32]);

/* base64url without padding. */
char *us_b64url_encode(const void *data, size_t len);

/* Decodes base64url (padding optional). Returns NULL on bad input;
** *outlen gets the length. */
unsigned char *us_b64url_decode(const char *text, size_t len, size_t *outlen);

/* n random bytes from the OS CSPRNG, as 2n lowercase hex characters. */
char *us_random_hex(size_t n);

#endif
