/*
** crypto.c: JWS signing for OAuth 2.0 private_key_jwt and DPoP proofs, on
** OpenSSL 3's EVP interface. See include/usersync/crypto.h for the contract.
**
** Uses: libcrypto (EVP_PKEY, EVP_DigestSign, OSSL_PARAM getters, BIO, RAND).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "usersync/crypto.h"

struct us_key {
  EVP_PKEY *pkey;
  int is_ec; /* 0: RSA (RS256), 1: EC P-256 (ES256) */
};

static void set_err(char *err, size_t errlen, const char *msg) {
  if (err && errlen)
    snprintf(err, errlen, "%s", msg);
}

char *us_b64url_encode(const void *data, size_t len) {
  static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const unsigned char *p = data;
  char *out = malloc(len / 3 * 4 + 5);
  if (!out)
    return NULL;
  size_t o = 0, i = 0;
  for (; i + 2 < len; i += 3) {
    unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
    out[o++] = tbl[v >> 18 & 63];
    out[o++] = tbl[v >> 12 & 63];
    out[o++] = tbl[v >> 6 & 63];
    out[o++] = tbl[v & 63];
  }
  if (len - i == 1) {
    unsigned v = (unsigned)p[i] << 16;
    out[o++] = tbl[v >> 18 & 63];
    out[o++] = tbl[v >> 12 & 63];
  } else if (len - i == 2) {
    unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8;
    out[o++] = tbl[v >> 18 & 63];
    out[o++] = tbl[v >> 12 & 63];
    out[o++] = tbl[v >> 6 & 63];
  }
  out[o] = '\0';
  return out;
}

static int b64val(int c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '-' || c == '+')
    return 62;
  if (c == '_' || c == '/')
    return 63;
  return -1;
}

unsigned char *us_b64url_decode(const char *text, size_t len, size_t *outlen) {
  while (len > 0 && text[len - 1] == '=')
    len--;
  if (len % 4 == 1)
    return NULL;
  unsigned char *out = malloc(len / 4 * 3 + 3);
  if (!out)
    return NULL;
  size_t o = 0;
  unsigned acc = 0;
  int bits = 0;
  for (size_t i = 0; i < len; i++) {
    int v = b64val((unsigned char)text[i]);
    if (v < 0) {
      free(out);
      return NULL;
    }
    acc = (acc << 6) | (unsigned)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (unsigned char)(acc >> bits & 0xff);
    }
  }
  *outlen = o;
  return out;
}

void us_sha256(const void *data, size_t len, unsigned char out[32]) {
  unsigned int n = 32;
  EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
}

int us_sha256_eq(const void *data, size_t len, const unsigned char want[32]) {
  unsigned char got[32];
  us_sha256(data, len, got);
  return CRYPTO_memcmp(got, want, sizeof got) == 0;
}

char *us_random_hex(size_t n) {
  unsigned char *buf = malloc(n ? n : 1);
  char *out = malloc(2 * n + 1);
  if (!buf || !out || RAND_bytes(buf, (int)n) != 1) {
    free(buf);
    free(out);
    return NULL;
  }
  for (size_t i = 0; i < n; i++)
    snprintf(out + 2 * i, 3, "%02x", buf[i]);
  out[2 * n] = '\0';
  free(buf);
  return out;
}

/* The key object owning pkey, or NULL (pkey freed, err set). */
static struct us_key *wrap_key(EVP_PKEY *pkey, int is_ec, char *err, size_t errlen) {
  struct us_key *key = malloc(sizeof *key);
  if (!key) {
    EVP_PKEY_free(pkey);
    set_err(err, errlen, "out of memory");
    return NULL;
  }
  key->pkey = pkey;
  key->is_ec = is_ec;
  return key;
}

struct us_key *us_key_load_pem(const char *pem, size_t len, char *err, size_t errlen) {
  BIO *bio = BIO_new_mem_buf(pem, (int)len);
  if (!bio) {
    set_err(err, errlen, "out of memory");
    return NULL;
  }
  EVP_PKEY *pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)"");
  BIO_free(bio);
  ERR_clear_error();
  if (!pkey) {
    set_err(err, errlen, "not a PEM private key (expected -----BEGIN PRIVATE KEY----- or an RSA/EC key)");
    return NULL;
  }
  int is_ec = 0;
  if (EVP_PKEY_is_a(pkey, "RSA")) {
    if (EVP_PKEY_get_bits(pkey) < 2048) {
      EVP_PKEY_free(pkey);
      set_err(err, errlen, "RSA key shorter than 2048 bits");
      return NULL;
    }
  } else if (EVP_PKEY_is_a(pkey, "EC")) {
    char group[64] = "";
    size_t glen = 0;
    if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &glen) ||
        strcmp(group, "prime256v1") != 0) {
      EVP_PKEY_free(pkey);
      set_err(err, errlen, "EC key is not on curve P-256");
      return NULL;
    }
    is_ec = 1;
  } else {
    EVP_PKEY_free(pkey);
    set_err(err, errlen, "unsupported key type (use RSA or EC P-256)");
    return NULL;
  }
  return wrap_key(pkey, is_ec, err, errlen);
}

struct us_key *us_key_generate_p256(char *err, size_t errlen) {
  EVP_PKEY *pkey = EVP_EC_gen("P-256");
  if (!pkey) {
    ERR_clear_error();
    set_err(err, errlen, "cannot generate an EC P-256 key");
    return NULL;
  }
  return wrap_key(pkey, 1, err, errlen);
}

void us_key_free(struct us_key *key) {
  if (key) {
    EVP_PKEY_free(key->pkey);
    free(key);
  }
}

const char *us_key_alg(const struct us_key *key) { return key->is_ec ? "ES256" : "RS256"; }

/* base64url of a BIGNUM param, left-padded to `width` bytes when width > 0. */
static char *bn_param_b64(const EVP_PKEY *pkey, const char *name, int width) {
  BIGNUM *bn = NULL;
  if (!EVP_PKEY_get_bn_param(pkey, name, &bn))
    return NULL;
  int n = BN_num_bytes(bn);
  int size = width > n ? width : n;
  unsigned char *buf = calloc(1, (size_t)size ? (size_t)size : 1);
  char *out = NULL;
  if (buf) {
    BN_bn2binpad(bn, buf, size);
    out = us_b64url_encode(buf, (size_t)size);
    free(buf);
  }
  BN_free(bn);
  return out;
}

/* The EC public point split into x and y (uncompressed form 04||x||y). */
static int ec_xy(const EVP_PKEY *pkey, char **x, char **y) {
  unsigned char pub[65];
  size_t len = 0;
  *x = *y = NULL;
  if (!EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub, &len) ||
      len != 65 || pub[0] != 4)
    return 0;
  *x = us_b64url_encode(pub + 1, 32);
  *y = us_b64url_encode(pub + 33, 32);
  return *x && *y;
}

/* Canonical (RFC 7638 member order) public JWK. */
char *us_key_public_jwk(const struct us_key *key) {
  char *a = NULL, *b = NULL, *out = NULL;
  size_t n;
  if (key->is_ec) {
    if (ec_xy(key->pkey, &a, &b)) {
      n = strlen(a) + strlen(b) + 64;
      if ((out = malloc(n)))
        snprintf(out, n, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", a, b);
    }
  } else {
    a = bn_param_b64(key->pkey, OSSL_PKEY_PARAM_RSA_E, 0);
    b = bn_param_b64(key->pkey, OSSL_PKEY_PARAM_RSA_N, 0);
    if (a && b) {
      n = strlen(a) + strlen(b) + 64;
      if ((out = malloc(n)))
        snprintf(out, n, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", a, b);
    }
  }
  free(a);
  free(b);
  return out;
}

char *us_key_thumbprint(const struct us_key *key) {
  char *jwk = us_key_public_jwk(key);
  if (!jwk)
    return NULL;
  unsigned char digest[32];
  us_sha256(jwk, strlen(jwk), digest);
  free(jwk);
  return us_b64url_encode(digest, sizeof digest);
}

/* DER ECDSA signature -> raw 64-byte r||s. */
static int ecdsa_der_to_raw(const unsigned char *der, size_t len, unsigned char raw[64]) {
  const unsigned char *p = der;
  ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)len);
  if (!sig)
    return 0;
  const BIGNUM *r, *s;
  ECDSA_SIG_get0(sig, &r, &s);
  int ok = BN_bn2binpad(r, raw, 32) == 32 && BN_bn2binpad(s, raw + 32, 32) == 32;
  ECDSA_SIG_free(sig);
  return ok;
}

char *us_jwt_sign(const struct us_key *key, const char *header_json, const char *claims_json,
                  char *err, size_t errlen) {
  char *h = us_b64url_encode(header_json, strlen(header_json));
  char *c = us_b64url_encode(claims_json, strlen(claims_json));
  char *input = NULL, *sig64 = NULL, *out = NULL;
  unsigned char *sig = NULL;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  size_t siglen = 0;
  if (!h || !c || !md)
    goto fail;
  size_t ilen = strlen(h) + 1 + strlen(c);
  if (!(input = malloc(ilen + 1)))
    goto fail;
  snprintf(input, ilen + 1, "%s.%s", h, c);
  if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key->pkey) != 1 ||
      EVP_DigestSign(md, NULL, &siglen, (const unsigned char *)input, ilen) != 1 ||
      !(sig = malloc(siglen)) ||
      EVP_DigestSign(md, sig, &siglen, (const unsigned char *)input, ilen) != 1)
    goto fail;
  if (key->is_ec) {
    unsigned char raw[64];
    if (!ecdsa_der_to_raw(sig, siglen, raw))
      goto fail;
    sig64 = us_b64url_encode(raw, sizeof raw);
  } else {
    sig64 = us_b64url_encode(sig, siglen);
  }
  if (!sig64)
    goto fail;
  size_t olen = ilen + 1 + strlen(sig64);
  if ((out = malloc(olen + 1)))
    snprintf(out, olen + 1, "%s.%s", input, sig64);
  else
    goto fail;
  goto done;
fail:
  ERR_clear_error();
  set_err(err, errlen, "signing failed");
done:
  EVP_MD_CTX_free(md);
  free(h);
  free(c);
  free(input);
  free(sig);
  free(sig64);
  return out;
}
