#!/usr/bin/env python3
"""Okta simulator: POST /oauth2/v1/token (client credentials, private_key_jwt) and DPoP.

Checks what Okta documents a token endpoint does and what the usersync
Okta client relies on: assertion verification against the registered public JWK (RS256),
iss = sub = client_id, aud = the token URL, exp at most 1 h ahead, jti reuse rejected, the
DPoP proof (typ, jwk, htm, htu, iat, jti) with the use_dpop_nonce handshake, scopes granted
per client, 3600 s tokens, and DPoP-bound API calls (scheme DPoP, a proof with ath). JWTs are
signed with the openssl CLI. Prints "N passed, N failed" last.
"""

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fake  # noqa: E402

ALL = ["okta.users.read", "okta.groups.read", "okta.apps.read", "okta.logs.read"]
TMP = tempfile.mkdtemp(prefix="okta-oauth-")


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def genkey(name):
    path = os.path.join(TMP, name + ".pem")
    subprocess.run(["openssl", "genrsa", "-out", path, "2048"], check=True,
                   stderr=subprocess.DEVNULL)
    mod = subprocess.run(["openssl", "rsa", "-in", path, "-noout", "-modulus"], check=True,
                         capture_output=True, text=True).stdout.strip().split("=", 1)[1]
    n = bytes.fromhex(mod)
    return path, {"kty": "RSA", "e": "AQAB", "n": b64(n)}


def sign(key, header, claims):
    signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing.encode(),
                         check=True, capture_output=True).stdout
    return signing + "." + b64(sig)


KEY1, JWK1 = genkey("k1")
KEY2, JWK2 = genkey("k2")


def genkey_ec(name):
    """An EC P-256 key (PEM path) and its public JWK."""
    path = os.path.join(TMP, name + ".pem")
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
                    path], check=True, stderr=subprocess.DEVNULL)
    der = subprocess.run(["openssl", "ec", "-in", path, "-pubout", "-outform", "DER"], check=True,
                         capture_output=True).stdout
    pt = der[-65:]  # the uncompressed point 04 || x || y ends the SubjectPublicKeyInfo
    assert pt[0] == 4
    return path, {"kty": "EC", "crv": "P-256", "x": b64(pt[1:33]), "y": b64(pt[33:])}


def der_to_raw(der):
    """ECDSA-Sig-Value (DER SEQUENCE of two INTEGERs) -> the JOSE r || s form."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 3
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        out += int.from_bytes(der[i + 2:i + 2 + n], "big").to_bytes(32, "big")
        i += 2 + n
    return out


def sign_es256(key, header, claims):
    signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing.encode(),
                         check=True, capture_output=True).stdout
    return signing + "." + b64(der_to_raw(der))


EC1, ECJWK1 = genkey_ec("e1")


def state(**client):
    c = {"jwks": [JWK1], "scopes": ALL, "dpop": True}
    c.update(client)
    return {"users": [{"id": "00u00000000000000001", "status": "ACTIVE",
                       "profile": {"login": "a@example.com"}}],
            "groups": [], "group_members": {}, "apps": {}, "logs": [],
            "oauth_clients": {"0oaSvc": c}}


def assertion(f, key=KEY1, **over):
    now = int(time.time())
    claims = {"iss": "0oaSvc", "sub": "0oaSvc", "aud": f.url + "/oauth2/v1/token",
              "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex}
    claims.update(over)
    return sign(key, {"alg": "RS256"}, claims)


def proof(f, method, url, key=KEY1, jwk=JWK1, nonce=None, ath=None, **over):
    claims = {"htm": method, "htu": url, "iat": int(time.time()), "jti": uuid.uuid4().hex}
    if nonce:
        claims["nonce"] = nonce
    if ath:
        claims["ath"] = ath
    claims.update(over)
    if jwk.get("kty") == "EC":
        return sign_es256(key, {"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}, claims)
    return sign(key, {"typ": "dpop+jwt", "alg": "RS256", "jwk": jwk}, claims)


def token_req(f, assertion_jwt, dpop=None, scope=" ".join(ALL)):
    body = urllib.parse.urlencode({
        "grant_type": "client_credentials", "scope": scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion_jwt})
    h = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    if dpop:
        h["DPoP"] = dpop
    return f.request("POST", "/oauth2/v1/token", body.encode(), h)


def get_token(f, **kw):
    """The whole DPoP flow; returns (token, nonce)."""
    r = token_req(f, assertion(f), proof(f, "POST", f.url + "/oauth2/v1/token"))
    assert r.status == 400 and r.json()["error"] == "use_dpop_nonce", r.body
    nonce = r.header("dpop-nonce")
    r = token_req(f, assertion(f), proof(f, "POST", f.url + "/oauth2/v1/token", nonce=nonce))
    assert r.status == 200, r.body
    return r.json()["access_token"], nonce


def api(f, token, path="/api/v1/users", scheme="DPoP", **proof_kw):
    h = {"Authorization": "%s %s" % (scheme, token), "Accept": "application/json"}
    ath = b64(hashlib.sha256(token.encode()).digest())
    if proof_kw.get("no_proof"):
        pass
    else:
        kw = {"ath": ath}
        kw.update(proof_kw)
        h["DPoP"] = proof(f, "GET", f.url + path.split("?")[0], **kw)
    return f.get(path, h)


def t_dpop_flow():
    with fake.Fake("okta", state=state()) as f:
        r = token_req(f, assertion(f))
        assert r.status == 400, r.status
        assert r.json() == {"error": "invalid_dpop_proof",
                            "error_description": "The DPoP proof JWT header is missing."}
        r = token_req(f, assertion(f), proof(f, "POST", f.url + "/oauth2/v1/token"))
        assert r.status == 400 and r.json()["error"] == "use_dpop_nonce"
        nonce = r.header("dpop-nonce")
        assert nonce
        r = token_req(f, assertion(f), proof(f, "POST", f.url + "/oauth2/v1/token", nonce=nonce))
        assert r.status == 200, r.body
        body = r.json()
        assert body["token_type"] == "DPoP" and body["expires_in"] == 3600, body
        assert body["scope"] == " ".join(ALL)
        tok = body["access_token"]
        assert api(f, tok).status == 200
        # the nonce stays valid: a second token needs no new round
        r = token_req(f, assertion(f), proof(f, "POST", f.url + "/oauth2/v1/token", nonce=nonce))
        assert r.status == 200


def t_assertion_errors():
    with fake.Fake("okta", state=state()) as f:
        _, nonce = get_token(f)
        turl = f.url + "/oauth2/v1/token"

        def attempt(a):
            r = token_req(f, a, proof(f, "POST", turl, nonce=nonce))
            return r.status, r.json()
        st, b = attempt(assertion(f, key=KEY2))
        assert (st, b["error"]) == (401, "invalid_client") and "signature" in b["error_description"]
        st, b = attempt(assertion(f, exp=int(time.time()) - 10))
        assert st == 401 and "expired" in b["error_description"], b
        st, b = attempt(assertion(f, exp=int(time.time()) + 7200))
        assert st == 401 and "too far" in b["error_description"], b
        st, b = attempt(assertion(f, aud="https://other.example/oauth2/v1/token"))
        assert st == 401 and "aud" in b["error_description"], b
        st, b = attempt(assertion(f, sub="0oaOther"))
        assert st == 401 and b["error"] == "invalid_client"
        st, b = attempt(assertion(f, iss="0oaUnknown", sub="0oaUnknown"))
        assert st == 401
        a = assertion(f)
        assert attempt(a)[0] == 200
        st, b = attempt(a)
        assert st == 401 and "already been used" in b["error_description"], b
        st, b = attempt("not.a.jwt")
        assert st == 401


def t_proof_errors():
    with fake.Fake("okta", state=state()) as f:
        _, nonce = get_token(f)
        turl = f.url + "/oauth2/v1/token"

        def attempt(p):
            r = token_req(f, assertion(f), p)
            return r.status, r.json()
        st, b = attempt(proof(f, "GET", turl, nonce=nonce))
        assert (st, b["error"]) == (400, "invalid_dpop_proof") and "htm" in b["error_description"]
        st, b = attempt(proof(f, "POST", f.url + "/other", nonce=nonce))
        assert st == 400 and "htu" in b["error_description"]
        st, b = attempt(proof(f, "POST", turl, nonce=nonce, iat=int(time.time()) - 3600))
        assert st == 400 and "iat" in b["error_description"]
        st, b = attempt(proof(f, "POST", turl, key=KEY2, nonce=nonce))  # signed by another key
        assert st == 400 and "signature" in b["error_description"]
        st, b = attempt(proof(f, "POST", turl, nonce="stale"))
        assert st == 400 and b["error"] == "use_dpop_nonce"
        p = proof(f, "POST", turl, nonce=nonce)
        assert attempt(p)[0] == 200
        st, b = attempt(p)
        assert st == 400 and "jti" in b["error_description"], b


def t_scopes_and_api():
    with fake.Fake("okta", state=state(scopes=["okta.users.read"])) as f:
        r = token_req(f, assertion(f), proof(f, "POST", f.url + "/oauth2/v1/token"))
        nonce = r.header("dpop-nonce")
        r = token_req(f, assertion(f), proof(f, "POST", f.url + "/oauth2/v1/token", nonce=nonce),
                      scope="okta.users.read okta.logs.read")
        assert r.status == 400 and r.json()["error"] == "invalid_scope", r.body
        assert "okta.logs.read" in r.json()["error_description"]
        r = token_req(f, assertion(f), proof(f, "POST", f.url + "/oauth2/v1/token", nonce=nonce),
                      scope="okta.users.read")
        tok = r.json()["access_token"]
        assert api(f, tok).status == 200
        r = api(f, tok, "/api/v1/groups")
        assert r.status == 403 and r.json()["errorCode"] == "E0000006"
        assert "insufficient_scope" in r.header("www-authenticate")
        # a DPoP-bound token is refused as Bearer, without a proof, with a bad ath, a reused
        # proof or another key
        assert api(f, tok, scheme="Bearer").status == 401
        assert api(f, tok, no_proof=True).status == 401
        assert api(f, tok, ath="x").status == 401
        assert api(f, tok, key=KEY2, jwk=JWK2).status == 401
        h = {"Authorization": "DPoP " + tok,
             "DPoP": proof(f, "GET", f.url + "/api/v1/users",
                           ath=b64(hashlib.sha256(tok.encode()).digest()))}
        assert f.get("/api/v1/users", h).status == 200
        assert f.get("/api/v1/users", h).status == 401, "a proof is single-use"
        r = api(f, tok + "x")
        assert r.status == 401 and r.json()["errorCode"] == "E0000011"
        # tokens last 3600 s of the simulator's clock
        f.request("PUT", "/__fake/clock", {"advance": 3601})
        assert api(f, tok).status == 401


def t_bearer_app_and_state():
    st = state(dpop=False)
    with fake.Fake("okta", state=st) as f:
        r = token_req(f, assertion(f))
        assert r.status == 200 and r.json()["token_type"] == "Bearer", r.body
        tok = r.json()["access_token"]
        assert f.get("/api/v1/users", {"Authorization": "Bearer " + tok}).status == 200
        got = f.state()["oauth_clients"]["0oaSvc"]
        assert got["scopes"] == ALL and got["dpop"] is False and got["token_lifetime"] == 3600
        bad = state()
        bad["oauth_clients"]["0oaSvc"]["jwks"] = [dict(JWK1, d="private")]
        r = f.request("PUT", "/__fake/state", json.dumps(bad).encode(),
                      {"Content-Type": "application/json"})
        assert r.status == 400 and "private key" in r.json()["error"]
        r = f.request("POST", "/oauth2/v1/token", b"grant_type=password",
                      {"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status == 400 and r.json()["error"] == "unsupported_grant_type"



def t_static_tokens_scopes_and_binding():
    """state.access_tokens: {token, scopes, dpop_jkt}; scopes per route;
    a bound token needs the DPoP scheme and a proof by the bound key with htm, htu and ath."""
    from sim.okta import jwk_thumbprint
    st = state()
    st["access_tokens"] = [
        "plain",
        {"token": "logs-only", "scopes": ["okta.logs.read"], "dpop_jkt": None},
        {"token": "bound", "scopes": ["okta.users.read", "okta.groups.read"],
         "dpop_jkt": jwk_thumbprint(JWK1)}]
    with fake.Fake("okta", state=st) as f:
        got = f.state()["access_tokens"]
        assert got[0] == {"token": "bound", "scopes": ["okta.groups.read", "okta.users.read"],
                          "dpop_jkt": jwk_thumbprint(JWK1)}, got
        assert got[2]["scopes"] == sorted(ALL) and got[2]["dpop_jkt"] is None, got
        bearer = lambda t, p: f.get(p, {"Authorization": "Bearer " + t})
        for p in ("/api/v1/users", "/api/v1/groups", "/api/v1/apps/0oaNone/users", "/api/v1/logs"):
            assert bearer("plain", p).status in (200, 404), p
        assert bearer("logs-only", "/api/v1/logs").status == 200
        for p, need in (("/api/v1/users", "okta.users.read"), ("/api/v1/users/me", "okta.users.read"),
                        ("/api/v1/groups", "okta.groups.read"),
                        ("/api/v1/apps/0oaNone/users", "okta.apps.read")):
            r = bearer("logs-only", p)
            assert r.status == 403 and r.json()["errorCode"] == "E0000006", (p, r)
            assert 'scope="%s"' % need in r.header("www-authenticate"), r.headers
        # bound: Bearer refused, DPoP without proof refused, proof by the right key accepted
        assert bearer("bound", "/api/v1/users").status == 401
        assert api(f, "bound", no_proof=True).status == 401
        assert api(f, "bound").status == 200
        assert api(f, "bound", "/api/v1/groups").status == 200
        r = api(f, "bound", key=KEY2, jwk=JWK2)
        assert r.status == 401 and "does not match" in r.header("www-authenticate"), r.headers
        r = api(f, "bound", "/api/v1/logs")
        assert r.status == 403 and r.json()["errorCode"] == "E0000006"
        # htm, htu and ath of the proof must match the call
        r = api(f, "bound", htm="POST")
        assert r.status == 401 and "htm" in r.header("www-authenticate"), r.headers
        r = api(f, "bound", htu=f.url + "/api/v1/groups")
        assert r.status == 401 and "htu" in r.header("www-authenticate"), r.headers
        r = api(f, "bound", ath=b64(hashlib.sha256(b"other").digest()))
        assert r.status == 401 and "ath" in r.header("www-authenticate"), r.headers
        # a query string in htu is ignored (RFC 9449 4.3)
        assert api(f, "bound", "/api/v1/users?limit=1").status == 200
        for bad in ([{"token": "x", "scopes": "okta.users.read"}], [{"token": ""}],
                    [{"token": "x", "dpop_jkt": 5}], [{"token": "x", "extra": 1}], [7]):
            st2 = state()
            st2["access_tokens"] = bad
            r = f.request("PUT", "/__fake/state", json.dumps(st2).encode(),
                          {"Content-Type": "application/json"})
            assert r.status == 400, bad


def t_app_share_counts_per_app():
    """The per-token share counts an OAuth app across its access tokens."""
    with fake.Fake("okta", state=state()) as f:
        f.faults(okta_buckets={"/api/v1/users": 4})
        t1, _ = get_token(f)
        t2, _ = get_token(f)
        assert api(f, t1).status == 200 and api(f, t2).status == 200
        r = api(f, t1)
        assert r.status == 429 and r.json()["errorCode"] == "E0000047", r
        assert r.header("X-Rate-Limit-Remaining") == "0" and r.header("X-Rate-Limit-Limit") == "4"
        # another principal (the SSWS token) still has its own half
        h = {"Authorization": "SSWS test-token"}
        assert f.get("/api/v1/users", h).status == 200 and f.get("/api/v1/users", h).status == 200
        assert f.get("/api/v1/users", h).status == 429

def t_metadata_and_es256_proofs():
    """RFC 8414 metadata lists the DPoP proof algorithms (RFC 9449 5.1); okta_dpop_algs
    narrows them; an ES256 proof by an EC key binds the token to that key (RFC 7638 EC
    thumbprint) while the client still authenticates with its RSA key."""
    from sim.okta import jwk_thumbprint
    with fake.Fake("okta", state=state()) as f:
        r = f.get("/.well-known/oauth-authorization-server")
        assert r.status == 200, r
        md = r.json()
        assert md["issuer"] == f.url and md["token_endpoint"] == f.url + "/oauth2/v1/token"
        assert md["dpop_signing_alg_values_supported"] == ["RS256", "ES256"]
        assert "private_key_jwt" in md["token_endpoint_auth_methods_supported"]
        turl = f.url + "/oauth2/v1/token"
        f.faults(okta_dpop_algs=["ES256"])
        assert f.get("/.well-known/oauth-authorization-server").json()[
            "dpop_signing_alg_values_supported"] == ["ES256"]
        r = token_req(f, assertion(f), proof(f, "POST", turl))
        assert (r.status, r.json()["error"]) == (400, "invalid_dpop_proof"), r.body
        assert "alg is not supported (supported: ES256)" in r.json()["error_description"]
        r = token_req(f, assertion(f), proof(f, "POST", turl, key=EC1, jwk=ECJWK1))
        assert r.status == 400 and r.json()["error"] == "use_dpop_nonce", r.body
        nonce = r.header("dpop-nonce")
        r = token_req(f, assertion(f), proof(f, "POST", turl, key=EC1, jwk=ECJWK1, nonce=nonce))
        assert r.status == 200 and r.json()["token_type"] == "DPoP", r.body
        tok = r.json()["access_token"]
        assert api(f, tok, key=EC1, jwk=ECJWK1).status == 200
        r = api(f, tok)  # the RSA key is not the bound one (and RS256 is not accepted)
        assert r.status == 401 and "invalid_dpop_proof" in r.header("www-authenticate")
        # a bad EC signature: another message signed, or a tampered signature
        p = proof(f, "GET", f.url + "/api/v1/users", key=EC1, jwk=ECJWK1,
                  ath=b64(hashlib.sha256(tok.encode()).digest()))
        head, claims, sig = p.split(".")
        bad = head + "." + claims + "." + b64(bytes(64))
        r = f.get("/api/v1/users", {"Authorization": "DPoP " + tok, "DPoP": bad})
        assert r.status == 401 and "signature" in r.header("www-authenticate"), r.headers
        assert f.get("/api/v1/users", {"Authorization": "DPoP " + tok, "DPoP": p}).status == 200
        st = state()
        st["access_tokens"] = [{"token": "ec-bound", "scopes": ALL,
                                "dpop_jkt": jwk_thumbprint(ECJWK1)}]
        f.put_state(st)
        assert api(f, "ec-bound", key=EC1, jwk=ECJWK1).status == 200
        r = f.request("PUT", "/__fake/faults", body={"okta_dpop_algs": ["HS256"]})
        assert r.status == 400


def t_nonce_rotation_on_success():
    """okta_nonce_rotate: every 200 token response carries a new DPoP-Nonce (RFC 9449 8.2) and
    the previous nonce is refused from then on."""
    with fake.Fake("okta", state=state()) as f:
        f.faults(okta_nonce_rotate=True)
        turl = f.url + "/oauth2/v1/token"
        r = token_req(f, assertion(f), proof(f, "POST", turl))
        n1 = r.header("dpop-nonce")
        r = token_req(f, assertion(f), proof(f, "POST", turl, nonce=n1))
        assert r.status == 200, r.body
        n2 = r.header("dpop-nonce")
        assert n2 and n2 != n1
        r = token_req(f, assertion(f), proof(f, "POST", turl, nonce=n1))
        assert r.status == 400 and r.json()["error"] == "use_dpop_nonce"
        assert r.header("dpop-nonce") == n2
        r = token_req(f, assertion(f), proof(f, "POST", turl, nonce=n2))
        assert r.status == 200 and r.header("dpop-nonce") not in (None, n2)
        f.faults()
        r = token_req(f, assertion(f), proof(f, "POST", turl, nonce=r.header("dpop-nonce")))
        assert r.status == 200 and r.header("dpop-nonce") is None, "no rotation without the fault"


def t_resource_server_nonce():
    """okta_rs_nonce: the API demands its own nonce (RFC 9449 9), distinct from the token
    endpoint's: 401 WWW-Authenticate: DPoP error="use_dpop_nonce" with DPoP-Nonce."""
    with fake.Fake("okta", state=state()) as f:
        tok, as_nonce = get_token(f)
        assert api(f, tok).status == 200
        f.faults(okta_rs_nonce=True)
        r = api(f, tok)
        assert r.status == 401 and r.json()["errorCode"] == "E0000011"
        assert 'DPoP error="use_dpop_nonce"' in r.header("www-authenticate"), r.headers
        rs = r.header("dpop-nonce")
        assert rs and rs != as_nonce
        r = api(f, tok, nonce=as_nonce)
        assert r.status == 401 and r.header("dpop-nonce") == rs, "the token endpoint's nonce is not the API's"
        assert api(f, tok, nonce=rs).status == 200
        assert api(f, tok, nonce=rs).status == 200, "the nonce stays valid"
        # the token endpoint still wants its own
        r = token_req(f, assertion(f), proof(f, "POST", f.url + "/oauth2/v1/token", nonce=rs))
        assert r.status == 400 and r.json()["error"] == "use_dpop_nonce"


def t_revoked_tokens():
    """okta_revoke_tokens: setting it revokes every issued token (as a restarted server that lost
    them): 401 with WWW-Authenticate error="invalid_token" (RFC 6750 3.1); a new token works."""
    with fake.Fake("okta", state=state()) as f:
        tok, nonce = get_token(f)
        assert api(f, tok).status == 200
        f.faults(okta_revoke_tokens=True)
        r = api(f, tok)
        assert r.status == 401 and r.json()["errorCode"] == "E0000011"
        assert r.header("www-authenticate") == \
            'DPoP error="invalid_token", error_description="The access token is invalid."', r.headers
        r = token_req(f, assertion(f), proof(f, "POST", f.url + "/oauth2/v1/token", nonce=nonce))
        assert r.status == 200
        assert api(f, r.json()["access_token"]).status == 200, "tokens issued after it work"
        r = f.get("/api/v1/users", {"Authorization": "Bearer nope"})
        assert r.status == 401 and 'Bearer error="invalid_token"' in r.header("www-authenticate")


if __name__ == "__main__":
    runner = fake.Runner()
    for name, fn in sorted(globals().items()):
        if name.startswith("t_") and callable(fn):
            runner.run(name[2:], fn)
    shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(runner.finish())
