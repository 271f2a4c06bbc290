package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"code.dny.dev/ssrf"
	"github.com/prometheus/client_golang/prometheus"
	mail "github.com/wneessen/go-mail"

	"github.com/actas/actas/broker/audit"
	"github.com/actas/actas/broker/signals"
	"github.com/actas/actas/config"
	"github.com/actas/actas/storage"
)

// Outbox delivery tuning.
const (
	outboxPoll  = 500 * time.Millisecond
	outboxLease = time.Minute // longer than one delivery may take
	maxBackoff  = time.Hour
	// MaxAttempts bounds delivery: with backoff doubling from 1s, the last
	// attempt is about 17 minutes after the first; then the message is
	// dead-lettered (audited, counted) instead of retried forever.
	MaxAttempts = 10
)

// Store is the outbox storage the worker needs.
type Store interface {
	ClaimOutbox(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]storage.OutboxMessage, error)
	FinishOutbox(ctx context.Context, id int64, at time.Time, errText string, next time.Time) error
	DeadLetterOutbox(ctx context.Context, id int64, at time.Time, errText string, ev storage.AuditEvent) error
}

// Config is what a Worker needs.
type Config struct {
	Store         Store
	Notifications config.Notifications
	Logger        *slog.Logger
	Now           func() time.Time
	// PolicySHA names the policy in force on the dead-letter audit events.
	PolicySHA func() string
	// Registry receives the delivery counters.
	Registry prometheus.Registerer
	// Streams, Keys and Issuer deliver Shared Signals pushes (channel
	// "ssf"); without them such messages fail and are retried.
	Streams StreamReader
	Keys    func() signals.Signer
	Issuer  string
	// LogoutURIs are the clients' backchannel_logout_uri, by client ID,
	// for channel "logout".
	LogoutURIs map[string]string
}

// Worker delivers outbox messages.
type Worker struct {
	store     Store
	cfg       config.Notifications
	hooks     *http.Client
	log       *slog.Logger
	now       func() time.Time
	policySHA func() string
	sent      *prometheus.CounterVec
	dead      *prometheus.CounterVec
	streams   StreamReader
	keys      func() signals.Signer
	issuer    string
	wake      chan struct{}

	logoutURIs map[string]string
}

// Wake makes the worker look for due messages now rather than at its next
// poll; it never blocks. Storage calls it after a commit that queued one.
func (w *Worker) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// New returns a worker for the configured channels.
func New(c Config) *Worker {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.PolicySHA == nil {
		c.PolicySHA = func() string { return "" }
	}
	w := &Worker{store: c.Store, cfg: c.Notifications, hooks: webhookClient(c.Notifications.AllowLoopbackWebhooks),
		log: c.Logger, now: c.Now, policySHA: c.PolicySHA,
		streams: c.Streams, keys: c.Keys, issuer: c.Issuer, wake: make(chan struct{}, 1), logoutURIs: c.LogoutURIs,
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "actas_outbox_deliveries_total", Help: "Outbox delivery attempts by channel and result (delivered, failed).",
		}, []string{"channel", "result"}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "actas_outbox_dead_letters_total", Help: "Outbox messages given up after MaxAttempts failed deliveries.",
		}, []string{"channel"}),
	}
	if c.Registry != nil {
		c.Registry.MustRegister(w.sent, w.dead)
	}
	return w
}

// Run delivers due outbox messages until ctx ends. Delivery is at least
// once: a message is marked delivered only after its channel took it, and
// leased to one sender at a time across replicas.
func (w *Worker) Run(ctx context.Context) {
	t := time.NewTicker(outboxPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.wake:
		}
		msgs, err := w.store.ClaimOutbox(ctx, w.now(), outboxLease, 32)
		if err != nil && ctx.Err() == nil {
			w.log.Warn("outbox: claiming", "err", err)
		}
		for _, m := range msgs {
			if ctx.Err() != nil {
				return // the lease runs out and another sender retries
			}
			w.deliver(ctx, m)
		}
	}
}

func (w *Worker) deliver(ctx context.Context, m storage.OutboxMessage) {
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var err error
	switch m.Channel {
	case "email":
		err = w.sendMail(dctx, m)
	case "webhook":
		err = w.sendWebhook(dctx, m)
	case "ssf":
		err = w.pushSET(dctx, m)
	case "logout":
		err = w.sendLogout(dctx, m)
	default:
		err = fmt.Errorf("unknown channel %q", m.Channel)
	}
	now := w.now()
	result := "delivered"
	if err != nil {
		result = "failed"
	}
	w.sent.WithLabelValues(m.Channel, result).Inc()
	if err == nil {
		if ferr := w.store.FinishOutbox(ctx, m.ID, now, "", time.Time{}); ferr != nil {
			w.log.Error("outbox: recording delivery", "err", ferr, "id", m.ID)
		}
		return
	}
	msg := err.Error()
	if len(msg) > 500 {
		msg = msg[:500]
	}
	if m.Attempts >= MaxAttempts {
		w.log.Error("outbox: delivery failed for the last time; dead-lettered", "id", m.ID, "channel", m.Channel, "attempts", m.Attempts, "err", err)
		w.dead.WithLabelValues(m.Channel).Inc()
		ev := audit.Event(now, w.policySHA(), audit.System, m.TenantID, audit.NotificationDead, strconv.FormatInt(m.ID, 10), audit.Failure,
			map[string]any{"kind": m.Kind, "channel": m.Channel, "destination": m.Destination, "attempts": m.Attempts, "error": msg})
		if derr := w.store.DeadLetterOutbox(ctx, m.ID, now, msg, ev); derr != nil {
			w.log.Error("outbox: recording dead letter", "err", derr, "id", m.ID)
		}
		return
	}
	backoff := min(time.Duration(1<<min(m.Attempts, 12))*time.Second, maxBackoff)
	w.log.Warn("outbox: delivery failed; will retry", "id", m.ID, "channel", m.Channel, "attempts", m.Attempts,
		"retry_in", backoff.String(), "err", err)
	if ferr := w.store.FinishOutbox(ctx, m.ID, now, msg, now.Add(backoff)); ferr != nil {
		w.log.Error("outbox: recording failure", "err", ferr, "id", m.ID)
	}
}

var kindTitles = map[string]string{
	storage.NotifyToggle:            "support access changed",
	storage.NotifyLockout:           "support codes voided after too many failed attempts",
	storage.NotifyGrantCreated:      "support access granted",
	storage.NotifyGrantRedeemed:     "a support engineer redeemed a grant",
	storage.NotifyGrantTerminated:   "a support grant ended",
	storage.NotifyGrantExpired:      "a support grant expired",
	storage.NotifyApprovalRequested: "a support grant awaits your approval",
	storage.NotifyApprovalDecided:   "your support grant was approved, refused or timed out",
}

// Render returns a notice's mail subject and body: what changed, when, and
// by whom.
func Render(n storage.Notice) (subject, body string) {
	subject = fmt.Sprintf("[actas] %s: %s", n.Tenant, kindTitles[n.Kind])
	var b strings.Builder
	fmt.Fprintf(&b, "What: %s (%s)\nWho:  %s %s\nWhen: %s\nTenant: %s\n", kindTitles[n.Kind], n.Action, n.ActorType, n.ActorID,
		n.Time.UTC().Format(time.RFC1123), n.Tenant)
	if n.Target != "" {
		fmt.Fprintf(&b, "Target: %s\n", n.Target)
	}
	if d := string(n.Detail); len(d) > 0 && d != "{}" && d != "null" {
		fmt.Fprintf(&b, "Details: %s\n", n.Detail)
	}
	return subject, b.String()
}

func (w *Worker) sendMail(ctx context.Context, m storage.OutboxMessage) error {
	c := w.cfg.SMTP
	if c.Host == "" {
		return errors.New("no SMTP relay configured (notifications.smtp)")
	}
	var n storage.Notice
	if err := json.Unmarshal(m.Payload, &n); err != nil {
		return fmt.Errorf("corrupt outbox payload: %v", err)
	}
	subject, body := Render(n)
	msg := mail.NewMsg()
	if err := msg.From(c.From); err != nil {
		return err
	}
	if err := msg.To(m.Destination); err != nil {
		return err
	}
	msg.Subject(subject)
	msg.SetBodyString(mail.TypeTextPlain, body)
	opts := []mail.Option{mail.WithPort(c.Port), mail.WithTimeout(15 * time.Second)}
	switch c.TLS {
	case "implicit":
		opts = append(opts, mail.WithSSL())
	case "none":
		opts = append(opts, mail.WithTLSPolicy(mail.NoTLS))
	default:
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory))
	}
	if c.Username != "" {
		opts = append(opts, mail.WithSMTPAuth(mail.SMTPAuthPlain), mail.WithUsername(c.Username), mail.WithPassword(c.Password))
	}
	client, err := mail.NewClient(c.Host, opts...)
	if err != nil {
		return err
	}
	return client.DialAndSendWithContext(ctx, msg)
}

// sendWebhook POSTs the payload, signed like the ticket hook:
// X-Actas-Signature = sha256=HMAC(secret, timestamp + "." + body).
func (w *Worker) sendWebhook(ctx context.Context, m storage.OutboxMessage) error {
	secret := w.cfg.WebhookSecret
	if secret == "" {
		return errors.New("no webhook secret configured (notifications.webhook_secret_env)")
	}
	ts := strconv.FormatInt(w.now().Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(m.Payload)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.Destination, bytes.NewReader(m.Payload))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Actas-Timestamp", ts)
	req.Header.Set("X-Actas-Signature", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	req.Header.Set("X-Actas-Delivery", strconv.FormatInt(m.ID, 10))
	resp, err := w.hooks.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

// webhookClient dials only public addresses (and loopback when allowed).
// The check runs on the resolved address at connect time, so a tenant's
// webhook URL cannot reach the operator's network whatever its DNS says;
// what counts as non-public is code.dny.dev/ssrf's IANA special-purpose
// registries (private, shared 100.64/10, 0/8, benchmarking 198.18/15,
// reserved 240/4, NAT64 64:ff9b::/96, and the rest), kept current there
// rather than by hand here.
func webhookClient(allowLoopback bool) *http.Client {
	opts := []ssrf.Option{ssrf.WithAnyPort()}
	if allowLoopback {
		opts = append(opts, ssrf.WithAllowedV4Prefixes(netip.MustParsePrefix("127.0.0.0/8")),
			ssrf.WithAllowedV6Prefixes(netip.MustParsePrefix("::1/128")))
	}
	guard := ssrf.New(opts...)
	dialer := &net.Dialer{Timeout: 10 * time.Second, Control: func(network, address string, c syscall.RawConn) error {
		if err := guard.Safe(network, address, c); err != nil {
			return fmt.Errorf("webhook: refusing to connect to non-public address %s: %w", address, err)
		}
		return nil
	}}
	return &http.Client{
		Timeout:       15 * time.Second,
		Transport:     &http.Transport{DialContext: dialer.DialContext, TLSHandshakeTimeout: 10 * time.Second, MaxIdleConns: 4},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
