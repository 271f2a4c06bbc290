package oauth

import (
	"context"
	"net/http"
	"strings"

	"github.com/actas/actas/broker/core"
	"github.com/actas/actas/rp/dpop"
)

// ErrInvalidDPoPProof is RFC 9449 §5's error for a missing or bad proof.
var ErrInvalidDPoPProof = &Error{Code: "invalid_dpop_proof", status: http.StatusBadRequest}

// dpopAlgs is dpop_signing_alg_values_supported.
var dpopAlgs = func() []string {
	out := make([]string, len(dpop.Algorithms))
	for i, a := range dpop.Algorithms {
		out[i] = string(a)
	}
	return out
}()

// proof checks the request's DPoP proof, if any, for a request to path at
// actas (htu is always the issuer's URL, never what the Host header
// claims), bound to accessToken when one is presented, and records it so
// that it works once on every replica. It returns the key's thumbprint, ""
// without a proof.
func (h *Handler) proof(ctx context.Context, r *http.Request, path, accessToken string) (string, error) {
	p, err := dpop.FromRequest(r)
	if err != nil {
		return "", err
	}
	if p == "" {
		return "", nil
	}
	v, err := dpop.Verify(p, dpop.Expect{Method: r.Method, URL: h.core.Issuer() + path, AccessToken: accessToken, Now: h.core.Now()})
	if err != nil {
		return "", err
	}
	if err := h.core.UseProof(ctx, v.JKT, v.JTI, v.Expiry); err != nil {
		return "", err
	}
	return v.JKT, nil
}

// tokenBinding is the DPoP binding of a /token request: its proof, which
// a client with require_dpop must send. Refresh tokens of public clients
// are bound too (RFC 9449 §5).
func (h *Handler) tokenBinding(r *http.Request, c *client) (core.Binding, error) {
	jkt, err := h.proof(r.Context(), r, "/token", "")
	if err != nil {
		return core.Binding{}, proofError(err)
	}
	if jkt == "" && c.RequireDPoP {
		return core.Binding{}, ErrInvalidDPoPProof.With("this client must send a DPoP proof (RFC 9449)")
	}
	return core.Binding{JKT: jkt, BindRefresh: !c.confidential()}, nil
}

// proofError maps a proof failure to invalid_dpop_proof; storage failures
// stay what they are.
func proofError(err error) error {
	if ce := core.As(err); ce != nil {
		if ce.Kind != core.KindProof {
			return err
		}
		return ErrInvalidDPoPProof.With(ce.Message)
	}
	return ErrInvalidDPoPProof.With("DPoP proof: " + strings.TrimPrefix(err.Error(), dpop.ErrInvalidProof.Error()+": "))
}
