// Package rp is the relying-party kit for products that accept actas
// access tokens: adopting actas is about ten lines.
//
//	v, err := rp.New(ctx, rp.Config{Issuer: "https://actas.example", Audience: "product"})
//	mux.Handle("/api/", v.Middleware(api))            // verified tokens only
//	mux.Handle("/ssf/events", v.Receiver())           // actas pushes revocations here
//	rp.RegisterPushStream(ctx, v, clientID, secret, "https://product.example/ssf/events")
//	...
//	id, _ := rp.FromContext(r.Context())              // id.Subject acts as the customer, id.Actor is the engineer
//
// The middleware verifies each token (JWKS with rotation, typ at+jwt, iss,
// aud, exp, nbf, act), the DPoP proof of a bound token (RFC 9449), and
// refuses at once the tokens of a grant actas reported ended through a
// Shared Signals push (CAEP session-revoked, RFC 8935), or, when
// configured, asks actas's introspection with a short bounded cache.
//
// It is its own Go module depending on go-jose only, so a product does not
// pull in the broker's SQLite, pgx or CEL. Subpackage dpop makes and
// checks RFC 9449 proofs; the broker and its CLI use it too.
package rp
