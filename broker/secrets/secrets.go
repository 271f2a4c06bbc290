package secrets

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MinSecretBytes is the smallest root secret accepted.
const MinSecretBytes = 32

// Keys are the keys derived from the root secret, one HKDF label each.
type Keys struct {
	code    []byte // HMAC key for support codes
	refresh []byte // HMAC key for refresh tokens
	kek     []byte // key-encryption key for signing keys in storage
	cursor  []byte // HMAC key for audit pagination cursors
	audit   []byte // HMAC key of the audit hash chain
	bearer  []byte // HMAC key of client bearer tokens (SSF stream management)
}

// Derive derives every per-use key from root (HKDF-SHA256, RFC 5869).
func Derive(root []byte) (Keys, error) {
	if len(root) < MinSecretBytes {
		return Keys{}, fmt.Errorf("the root secret must be at least %d bytes", MinSecretBytes)
	}
	derive := func(label string) ([]byte, error) {
		return hkdf.Key(sha256.New, root, nil, "actas/v1/"+label, 32)
	}
	var s Keys
	var err error
	for _, d := range []struct {
		dst   *[]byte
		label string
	}{{&s.code, "support-code"}, {&s.refresh, "refresh-token"}, {&s.kek, "key-encryption"}, {&s.cursor, "audit-cursor"}, {&s.audit, "audit-chain"}, {&s.bearer, "client-bearer"}} {
		if *d.dst, err = derive(d.label); err != nil {
			return Keys{}, err
		}
	}
	return s, nil
}

// MAC is HMAC-SHA256 over length-prefixed parts.
func MAC(key []byte, parts ...string) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		// length-prefix each part so that ("ab","c") and ("a","bc") differ
		fmt.Fprintf(m, "%d:%s", len(p), p)
	}
	return m.Sum(nil)
}

// AuditKey is the key of the audit chain, for the store and for verifiers.
func (s Keys) AuditKey() []byte { return s.audit }

// KEK is the key-encryption key of signing keys in storage.
func (s Keys) KEK() []byte { return s.kek }

// CodeHash binds a support code to its tenant; only this is stored.
func (s Keys) CodeHash(tenant, code string) []byte { return MAC(s.code, tenant, code) }

// RefreshHash is the stored form of a refresh token.
func (s Keys) RefreshHash(token string) []byte { return MAC(s.refresh, token) }

// OPHash is the stored form of a secret of the OpenID Provider flow
// (kind "session", "browser" or "code"): a keyed hash, domain-separated by
// kind, so that a leaked table yields no cookie or code.
func (s Keys) OPHash(kind, value string) []byte { return MAC(s.refresh, "op-"+kind, value) }

// SCIMHash is what storage keeps of a SCIM bearer (the refresh key, in
// its own length-prefixed domain).
func (s Keys) SCIMHash(token string) []byte { return MAC(s.refresh, "scim-bearer", token) }

// SealCursor makes an opaque, tamper-proof page cursor carrying pos and
// bound to scope (the tenant and the list it pages), so a cursor is good
// only for the list and tenant it came from.
func (s Keys) SealCursor(scope string, pos []byte) string {
	b := append(slices.Clip(pos), MAC(s.cursor, scope, string(pos))[:16]...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// OpenCursor returns the position of a cursor sealed for scope.
func (s Keys) OpenCursor(scope, c string) ([]byte, bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) < 16 || len(b) > 512 {
		return nil, false
	}
	pos, mac := b[:len(b)-16], b[len(b)-16:]
	if !hmac.Equal(mac, MAC(s.cursor, scope, string(pos))[:16]) {
		return nil, false
	}
	return pos, true
}

// BearerPrefix starts every client bearer token.
const BearerPrefix = "actas_cb_"

// SealBearer makes a client's bearer token for scope, good until exp: no
// storage, the MAC is the proof (32 bytes, compared in constant time).
func (s Keys) SealBearer(clientID, scope string, exp time.Time) string {
	body := strconv.FormatInt(exp.Unix(), 10) + "." + base64.RawURLEncoding.EncodeToString([]byte(clientID))
	return BearerPrefix + body + "." + base64.RawURLEncoding.EncodeToString(MAC(s.bearer, scope, body))
}

// OpenBearer returns the client of a bearer token for scope that has not
// expired at now.
func (s Keys) OpenBearer(token, scope string, now time.Time) (string, bool) {
	rest, ok := strings.CutPrefix(token, BearerPrefix)
	if !ok || len(rest) > 1024 {
		return "", false
	}
	i := strings.LastIndexByte(rest, '.')
	if i < 0 {
		return "", false
	}
	body, mac := rest[:i], rest[i+1:]
	want := base64.RawURLEncoding.EncodeToString(MAC(s.bearer, scope, body))
	if !hmac.Equal([]byte(mac), []byte(want)) {
		return "", false
	}
	expS, idB64, ok := strings.Cut(body, ".")
	exp, err := strconv.ParseInt(expS, 10, 64)
	id, err2 := base64.RawURLEncoding.DecodeString(idB64)
	if !ok || err != nil || err2 != nil || !now.Before(time.Unix(exp, 0)) {
		return "", false
	}
	return string(id), true
}

// LoadRoot finds the root secret: the environment variable
// ACTAS_SECRET_KEY, else secretFile, else (SQLite only, when allowCreate)
// a key file beside the database, created 0600 on first start.
func LoadRoot(envValue, secretFile, createPath string) ([]byte, error) {
	if envValue != "" {
		return decodeSecret(envValue, "ACTAS_SECRET_KEY")
	}
	if secretFile != "" {
		return readSecretFile(secretFile)
	}
	if createPath == "" {
		return nil, errors.New("no root secret: set ACTAS_SECRET_KEY or secret_key_file")
	}
	b, err := readSecretFile(createPath)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return b, err
	}
	secret := make([]byte, MinSecretBytes)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(createPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return readSecretFile(createPath) // another process created it first
	}
	if err != nil {
		return nil, fmt.Errorf("creating root secret file: %w", err)
	}
	if _, err := f.WriteString(base64.StdEncoding.EncodeToString(secret) + "\n"); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return secret, f.Close()
}

func readSecretFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("root secret file %s is readable by others (mode %v): chmod 600 it", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return decodeSecret(string(b), path)
}

func decodeSecret(s, from string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) < MinSecretBytes {
				return nil, fmt.Errorf("root secret from %s is %d bytes; at least %d are required", from, len(b), MinSecretBytes)
			}
			return b, nil
		}
	}
	return nil, fmt.Errorf("root secret from %s is not base64", from)
}
