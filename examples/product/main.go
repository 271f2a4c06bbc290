// Command product is a tiny product built on the rp kit: it accepts actas
// access tokens at GET /whoami and hears revocations on a Shared Signals
// push stream it registers at start.
//
//	ACTAS_CLIENT_SECRET=... go run ./examples/product --broker https://actas.example --client-id product --listen 127.0.0.1:9090
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/actas/actas/rp"
)

func main() {
	broker := flag.String("broker", "", "actas's issuer URL (required)")
	clientID := flag.String("client-id", "", "this product's client id at actas (required; secret in ACTAS_CLIENT_SECRET)")
	listen := flag.String("listen", "127.0.0.1:9090", "host:port to serve on")
	audience := flag.String("audience", "", "the audience of this product's tokens (default: the client id)")
	publicURL := flag.String("public-url", "", "the URL actas reaches this product at (default: http://LISTEN)")
	flag.Parse()
	secret := os.Getenv("ACTAS_CLIENT_SECRET")
	if *broker == "" || *clientID == "" || secret == "" {
		fmt.Fprintln(os.Stderr, "product: --broker, --client-id and ACTAS_CLIENT_SECRET are required")
		os.Exit(2)
	}
	if *audience == "" {
		*audience = *clientID
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *broker, *clientID, secret, *audience, *listen, *publicURL); err != nil {
		fmt.Fprintln(os.Stderr, "product:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, broker, clientID, secret, audience, listen, publicURL string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	if publicURL == "" {
		publicURL = "http://" + ln.Addr().String()
	}
	// The ten lines: verify tokens, receive pushes, register the stream.
	v, err := rp.New(ctx, rp.Config{Issuer: broker, Audience: audience, PublicURL: publicURL})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /whoami", v.Middleware(http.HandlerFunc(whoami)))
	mux.Handle("POST /ssf/events", v.Receiver())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	stream, err := rp.RegisterPushStream(ctx, v, clientID, secret, publicURL+"/ssf/events")
	if err != nil {
		srv.Close()
		return err
	}
	slog.Info("product ready", "listen", ln.Addr().String(), "ssf_stream", stream)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// whoami answers who the token acts as, and who acts.
func whoami(w http.ResponseWriter, r *http.Request) {
	id, _ := rp.FromContext(r.Context())
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"sub": id.Subject, "act": id.Actor, "tenant": id.Tenant, "roles": id.Roles, "environments": id.Environments,
	})
}
