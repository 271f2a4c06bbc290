package broker

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
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	mail "github.com/wneessen/go-mail"

	"github.com/actas/actas/claims"
	"github.com/actas/actas/storage"
)

// Outbox delivery tuning.
const (
	outboxPoll  = 500 * time.Millisecond
	outboxLease = time.Minute // longer than one delivery may take
	maxBackoff  = time.Hour
)

// runOutbox delivers due outbox messages until ctx ends. Delivery is at
// least once: a message is marked delivered only after its channel took
// it, and leased to one sender at a time across replicas.
func (s *Server) runOutbox(ctx context.Context) {
	t := time.NewTicker(outboxPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		msgs, err := s.store.ClaimOutbox(ctx, s.now(), outboxLease, 32)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("outbox: claiming", "err", err)
		}
		for _, m := range msgs {
			if ctx.Err() != nil {
				return // the lease runs out and another sender retries
			}
			s.deliver(ctx, m)
		}
	}
}

func (s *Server) deliver(ctx context.Context, m storage.OutboxMessage) {
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var err error
	switch m.Channel {
	case "email":
		err = s.sendMail(dctx, m)
	case "webhook":
		err = s.sendWebhook(dctx, m)
	default:
		err = fmt.Errorf("unknown channel %q", m.Channel)
	}
	now := s.now()
	if err == nil {
		if ferr := s.store.FinishOutbox(ctx, m.ID, now, "", time.Time{}); ferr != nil {
			s.log.Error("outbox: recording delivery", "err", ferr, "id", m.ID)
		}
		return
	}
	backoff := min(time.Duration(1<<min(m.Attempts, 12))*time.Second, maxBackoff)
	s.log.Warn("outbox: delivery failed; will retry", "id", m.ID, "channel", m.Channel, "attempts", m.Attempts, "retry_in", backoff, "err", err)
	msg := err.Error()
	if len(msg) > 500 {
		msg = msg[:500]
	}
	if ferr := s.store.FinishOutbox(ctx, m.ID, now, msg, now.Add(backoff)); ferr != nil {
		s.log.Error("outbox: recording failure", "err", ferr, "id", m.ID)
	}
}

// notice is the payload of an outbox message.
type notice struct {
	Kind      string          `json:"kind"`
	Tenant    string          `json:"tenant"`
	Time      time.Time       `json:"time"`
	Action    string          `json:"action"`
	ActorType string          `json:"actor_type"`
	ActorID   string          `json:"actor_id"`
	Target    string          `json:"target"`
	Detail    json.RawMessage `json:"detail"`
}

var kindTitles = map[string]string{
	storage.NotifyToggle:          "support access changed",
	storage.NotifyLockout:         "support codes voided after too many failed attempts",
	storage.NotifyGrantCreated:    "support access granted",
	storage.NotifyGrantRedeemed:   "a support engineer redeemed a grant",
	storage.NotifyGrantTerminated: "a support grant ended",
	storage.NotifyGrantExpired:    "a support grant expired",
}

// recordExpiries audits (and so notifies) grants that ran out.
func (s *Server) recordExpiries(ctx context.Context) {
	ev := s.event(ctx, actor{Type: storage.ActorSystem, ID: "actas"}, "", "grant.expire", "", "success", map[string]any{"reason": "expired"})
	for {
		n, err := s.store.RecordExpiries(ctx, s.now(), 100, ev)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("recording grant expiries", "err", err)
			}
			return
		}
		if n < 100 {
			return
		}
	}
}

// text renders what changed, when, and by whom.
func (n notice) text() (subject, body string) {
	subject = fmt.Sprintf("[actas] %s: %s", n.Tenant, kindTitles[n.Kind])
	var b strings.Builder
	fmt.Fprintf(&b, "What: %s (%s)\nWho:  %s %s\nWhen: %s\nTenant: %s\n", kindTitles[n.Kind], n.Action, n.ActorType, n.ActorID,
		n.Time.UTC().Format(time.RFC1123), n.Tenant)
	if n.Target != "" {
		fmt.Fprintf(&b, "Target: %s\n", n.Target)
	}
	if len(n.Detail) > 0 && string(n.Detail) != "{}" {
		fmt.Fprintf(&b, "Details: %s\n", n.Detail)
	}
	return subject, b.String()
}

func (s *Server) sendMail(ctx context.Context, m storage.OutboxMessage) error {
	c := s.cfg.Notifications.SMTP
	if c.Host == "" {
		return errors.New("no SMTP relay configured (notifications.smtp)")
	}
	var n notice
	if err := json.Unmarshal(m.Payload, &n); err != nil {
		return fmt.Errorf("corrupt outbox payload: %v", err)
	}
	subject, body := n.text()
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
func (s *Server) sendWebhook(ctx context.Context, m storage.OutboxMessage) error {
	secret := s.cfg.Notifications.WebhookSecret
	if secret == "" {
		return errors.New("no webhook secret configured (notifications.webhook_secret_env)")
	}
	ts := strconv.FormatInt(s.now().Unix(), 10)
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
	resp, err := s.hooks.Do(req)
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

// maybeRetain seals a checkpoint of every audit chain head and applies
// retention, once an hour.
func (s *Server) maybeRetain(ctx context.Context) {
	now := s.now()
	if now.Sub(s.lastRetention) < time.Hour {
		return
	}
	s.lastRetention = now
	sign := s.keys.Load().SignPayload
	if err := s.store.Checkpoint(ctx, now, sign); err != nil {
		s.log.Warn("audit checkpoint", "err", err)
		return
	}
	r := s.cfg.Retention
	p := storage.PruneParams{Now: now, Sign: sign,
		EngineersBefore: now.Add(-r.EngineerRecords.Std()), ArchiveBefore: now.Add(-r.ArchiveGrantsAfter.Std())}
	if r.AuditEvents > 0 {
		p.AuditBefore = now.Add(-r.AuditEvents.Std())
	}
	res, err := s.store.Prune(ctx, p)
	if err != nil {
		s.log.Warn("retention", "err", err)
		return
	}
	if res != (storage.PruneResult{}) {
		s.log.Info("retention applied", "audit_events", res.AuditEvents, "engineer_records", res.Engineers, "archived_grants", res.Archived)
	}
}

// webhookClient dials only public addresses (and loopback when allowed):
// the check runs on the resolved address at connect time, so a tenant's
// webhook URL cannot reach the operator's private network, whatever its
// DNS says.
func webhookClient(allowLoopback bool) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return err
		}
		ip := net.ParseIP(host)
		switch {
		case ip == nil:
			return fmt.Errorf("webhook: unresolved address %q", address)
		case ip.IsLoopback() && allowLoopback:
			return nil
		case ip.IsLoopback(), ip.IsPrivate(), ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast(),
			ip.IsUnspecified(), ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
			return fmt.Errorf("webhook: refusing to connect to non-public address %s", ip)
		}
		return nil
	}}
	return &http.Client{
		Timeout:       15 * time.Second,
		Transport:     &http.Transport{DialContext: dialer.DialContext, TLSHandshakeTimeout: 10 * time.Second, MaxIdleConns: 4},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// CheckpointVerifier checks checkpoint signatures against every public
// key ever stored (retired keys included), for `actas audit verify`.
func CheckpointVerifier(ctx context.Context, st interface {
	PublicKeys(context.Context) (map[string][]byte, error)
}) (func(storage.Checkpoint) error, error) {
	pubs, err := st.PublicKeys(ctx)
	if err != nil {
		return nil, err
	}
	var keys []*claims.Key
	for _, jwk := range pubs {
		k, err := claims.ParsePublic(jwk)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	ks, err := claims.NewKeySet(nil, keys)
	if err != nil {
		return nil, err
	}
	return func(c storage.Checkpoint) error {
		if c.Signature == "" {
			return errors.New("the checkpoint is not signed")
		}
		payload, err := ks.VerifyPayload(c.Signature)
		if err != nil {
			return err
		}
		if !bytes.Equal(payload, storage.CheckpointPayload(c.Hash)) {
			return errors.New("the signature is for another checkpoint")
		}
		return nil
	}, nil
}
