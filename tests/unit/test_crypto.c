/*
** test_crypto.c: runtime/crypto.c against OpenSSL's own verifier: RS256 and
** ES256 JWS produced by us_jwt_sign verify with the public key; JWKs carry
** the key's real parameters; base64url and SHA-256 match published vectors;
** bad keys are refused without echoing key material.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "usersync/crypto.h"

static int checks, failures;
#define CHECK(cond, what)                                                                          \
  do {                                                                                             \
    checks++;                                                                                      \
    if (!(cond)) {                                                                                 \
      failures++;                                                                                  \
      fprintf(stderr, "%s:%d: failed: %s (%s)\n", __FILE__, __LINE__, what, #cond);               \
    }                                                                                              \
  } while (0)

static char *pem_of(EVP_PKEY *pkey, size_t *len) {
  BIO *bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL);
  char *data;
  long n = BIO_get_mem_data(bio, &data);
  char *out = malloc((size_t)n + 1);
  memcpy(out, data, (size_t)n);
  out[n] = '\0';
  *len = (size_t)n;
  BIO_free(bio);
  return out;
}

/* Verifies a compact JWS with OpenSSL directly. */
static int verify(EVP_PKEY *pkey, const char *jwt, int is_ec) {
  const char *dot2 = strrchr(jwt, '.');
  size_t siglen = 0;
  unsigned char *sig = us_b64url_decode(dot2 + 1, strlen(dot2 + 1), &siglen);
  unsigned char *der = NULL;
  size_t derlen = siglen;
  if (is_ec) {
    if (siglen != 64)
      return 0;
    ECDSA_SIG *s = ECDSA_SIG_new();
    ECDSA_SIG_set0(s, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
    int n = i2d_ECDSA_SIG(s, &der);
    derlen = (size_t)n;
    ECDSA_SIG_free(s);
  }
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  int ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pkey) == 1 &&
           EVP_DigestVerify(md, is_ec ? der : sig, derlen, (const unsigned char *)jwt,
                            (size_t)(dot2 - jwt)) == 1;
  EVP_MD_CTX_free(md);
  free(sig);
  OPENSSL_free(der);
  return ok;
}

static void test_key(EVP_PKEY *pkey, int is_ec) {
  size_t len;
  char *pem = pem_of(pkey, &len);
  char err[160];
  struct us_key *key = us_key_load_pem(pem, len, err, sizeof err);
  CHECK(key != NULL, "load generated key");
  if (!key) {
    free(pem);
    return;
  }
  CHECK(strcmp(us_key_alg(key), is_ec ? "ES256" : "RS256") == 0, "alg");
  char header[64];
  snprintf(header, sizeof header, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", us_key_alg(key));
  char *jwt = us_jwt_sign(key, header, "{\"iss\":\"0oa1\",\"sub\":\"0oa1\",\"exp\":1}", err, sizeof err);
  CHECK(jwt != NULL, "sign");
  if (jwt) {
    CHECK(verify(pkey, jwt, is_ec), "signature verifies with OpenSSL");
    char *tampered = strdup(jwt);
    tampered[strchr(jwt, '.') - jwt + 2] ^= 1; /* flip a claims character */
    CHECK(!verify(pkey, tampered, is_ec), "tampered token does not verify");
    free(tampered);
  }
  char *jwk = us_key_public_jwk(key);
  CHECK(jwk && strstr(jwk, is_ec ? "\"kty\":\"EC\"" : "\"kty\":\"RSA\""), "jwk kty");
  if (!is_ec && jwk) {
    BIGNUM *n = NULL;
    EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &n);
    unsigned char buf[512];
    int nb = BN_bn2bin(n, buf);
    char *n64 = us_b64url_encode(buf, (size_t)nb);
    CHECK(strstr(jwk, n64) != NULL, "jwk carries the modulus");
    CHECK(strstr(jwk, "\"e\":\"AQAB\"") != NULL, "jwk exponent 65537");
    free(n64);
    BN_free(n);
  }
  char *tp = us_key_thumbprint(key);
  CHECK(tp && strlen(tp) == 43, "thumbprint is 32 bytes base64url");
  free(tp);
  free(jwk);
  free(jwt);
  us_key_free(key);
  free(pem);
}

int main(void) {
  /* base64url vectors (RFC 4648 §10, url alphabet, no padding) */
  const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar", "\xfb\xff"};
  const char *out[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy", "-_8"};
  for (int i = 0; i < 8; i++) {
    char *e = us_b64url_encode(in[i], strlen(in[i]));
    CHECK(e && strcmp(e, out[i]) == 0, "b64url encode vector");
    size_t n = 0;
    unsigned char *d = us_b64url_decode(e, strlen(e), &n);
    CHECK(d && n == strlen(in[i]) && memcmp(d, in[i], n) == 0, "b64url round trip");
    free(d);
    free(e);
  }
  size_t n;
  CHECK(us_b64url_decode("a*b", 3, &n) == NULL, "bad base64 refused");
  unsigned char h[32];
  us_sha256("abc", 3, h);
  char *h64 = us_b64url_encode(h, 32);
  CHECK(strcmp(h64, "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0") == 0, "sha256(abc)");
  free(h64);
  char *r1 = us_random_hex(16), *r2 = us_random_hex(16);
  CHECK(strlen(r1) == 32 && strcmp(r1, r2) != 0, "random ids differ");
  free(r1);
  free(r2);

  EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
  test_key(rsa, 0);
  EVP_PKEY_free(rsa);
  EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  test_key(ec, 1);
  EVP_PKEY_free(ec);

  char err[160];
  const char *junk = "-----BEGIN PRIVATE KEY-----\nTUlJRXZRSUJBREFOQmdrcWhraUc5dzBCQVFFRkFBU0NCS2N3Z2dTakFnRUFBb0lCQVFD\n-----END PRIVATE KEY-----\n";
  CHECK(us_key_load_pem(junk, strlen(junk), err, sizeof err) == NULL, "junk key refused");
  CHECK(strstr(err, "TUlJ") == NULL, "error does not echo key material");
  EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
  size_t slen;
  char *spem = pem_of(small, &slen);
  CHECK(us_key_load_pem(spem, slen, err, sizeof err) == NULL && strstr(err, "2048"), "short RSA refused");
  free(spem);
  EVP_PKEY_free(small);

  printf("%d passed, %d failed\n", checks - failures, failures);
  return failures ? 1 : 0;
}
