package claims

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Supported algorithms; the allow-list of Verify is built from these.
const (
	ES256 = "ES256"
	RS256 = "RS256"
	EdDSA = "EdDSA"
)

// Key is a signing key: private part (nil for a key known only by its
// public half) and its public JWK.
type Key struct {
	ID        string
	Algorithm string
	Private   crypto.Signer
	Public    jose.JSONWebKey
	// NotAfter, if set, is when the key stops being published.
	NotAfter time.Time
}

// GenerateKey creates a key for alg; its ID is the RFC 7638 thumbprint.
func GenerateKey(alg string) (*Key, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RS256:
		priv, err = rsa.GenerateKey(rand.Reader, 3072)
	case EdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("claims: unsupported algorithm %q", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("claims: generating %s key: %w", alg, err)
	}
	return newKey(alg, priv)
}

func newKey(alg string, priv crypto.Signer) (*Key, error) {
	pub := jose.JSONWebKey{Key: priv.Public(), Algorithm: alg, Use: "sig"}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("claims: thumbprint: %w", err)
	}
	pub.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	return &Key{ID: pub.KeyID, Algorithm: alg, Private: priv, Public: pub}, nil
}

// MarshalPrivate returns the PKCS #8 DER of the private key.
func (k *Key) MarshalPrivate() ([]byte, error) {
	if k.Private == nil {
		return nil, errors.New("claims: key has no private part")
	}
	return x509.MarshalPKCS8PrivateKey(k.Private)
}

// MarshalPublic returns the public JWK as JSON.
func (k *Key) MarshalPublic() ([]byte, error) { return json.Marshal(k.Public) }

// ParsePrivate rebuilds a key from PKCS #8 DER and checks it matches alg.
func ParsePrivate(alg string, der []byte) (*Key, error) {
	raw, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("claims: parsing private key: %w", err)
	}
	priv, ok := raw.(crypto.Signer)
	if !ok {
		return nil, errors.New("claims: private key cannot sign")
	}
	switch priv.(type) {
	case *ecdsa.PrivateKey:
		ok = alg == ES256
	case *rsa.PrivateKey:
		ok = alg == RS256
	case ed25519.PrivateKey:
		ok = alg == EdDSA
	}
	if !ok {
		return nil, fmt.Errorf("claims: private key does not match algorithm %s", alg)
	}
	return newKey(alg, priv)
}

// ParsePublic rebuilds a verification-only key from its JWK JSON.
func ParsePublic(data []byte) (*Key, error) {
	var jwk jose.JSONWebKey
	if err := json.Unmarshal(data, &jwk); err != nil {
		return nil, fmt.Errorf("claims: parsing public key: %w", err)
	}
	if !jwk.Valid() || !jwk.IsPublic() || jwk.KeyID == "" {
		return nil, errors.New("claims: invalid public key")
	}
	switch jwk.Algorithm {
	case ES256, RS256, EdDSA:
	default:
		return nil, fmt.Errorf("claims: public key algorithm %q not allowed", jwk.Algorithm)
	}
	return &Key{ID: jwk.KeyID, Algorithm: jwk.Algorithm, Public: jwk}, nil
}

// Seal encrypts plaintext with AES-256-GCM under kek, binding it to aad
// (the key ID) so that ciphertexts cannot be swapped between rows.
func Seal(kek, plaintext, aad []byte) ([]byte, error) {
	gcm, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return gcm.Seal(nonce, nonce, plaintext, aad), nil
}

// Open reverses Seal.
func Open(kek, sealed, aad []byte) ([]byte, error) {
	gcm, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	if len(sealed) < gcm.NonceSize() {
		return nil, errors.New("claims: sealed key too short")
	}
	pt, err := gcm.Open(nil, sealed[:gcm.NonceSize()], sealed[gcm.NonceSize():], aad)
	if err != nil {
		return nil, errors.New("claims: cannot decrypt signing key: wrong key-encryption key or corrupted row")
	}
	return pt, nil
}

func newGCM(kek []byte) (cipher.AEAD, error) {
	if len(kek) != 32 {
		return nil, errors.New("claims: key-encryption key must be 32 bytes")
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
