package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/actas/actas/broker/signals"
	"github.com/actas/actas/storage"
)

// StreamReader reads a Shared Signals stream by id.
type StreamReader interface {
	Stream(ctx context.Context, clientID, id string) (storage.Stream, error)
}

// pushSET delivers one signal to its push stream (RFC 8935): the SET is
// signed now, with the key in force, under the jti fixed when the event
// happened, so a retry repeats the same event and receivers drop doubles.
func (w *Worker) pushSET(ctx context.Context, m storage.OutboxMessage) error {
	if w.streams == nil || w.keys == nil {
		return errors.New("shared signals are not wired to the outbox")
	}
	var sig storage.Signal
	if err := json.Unmarshal(m.Payload, &sig); err != nil {
		return fmt.Errorf("corrupt signal payload: %w", err)
	}
	st, err := w.streams.Stream(ctx, "", m.Destination)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && st.Status == storage.StreamDisabled) {
		// Nothing to retry: the receiver asked for no more events.
		w.log.Info("ssf: event dropped: stream deleted or disabled", "stream", m.Destination, "jti", sig.JTI)
		return nil
	}
	if err != nil {
		return err
	}
	if st.Status == storage.StreamPaused {
		return errors.New("stream paused; the event waits for it")
	}
	set, err := signals.Sign(w.keys(), sig, w.issuer)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, st.EndpointURL, strings.NewReader(set))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/secevent+jwt")
	req.Header.Set("Accept", "application/json")
	if st.AuthorizationHeader != "" {
		req.Header.Set("Authorization", st.AuthorizationHeader)
	}
	resp, err := w.hooks.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
		// RFC 8935 §2.3: {"err", "description"} says why.
		var e struct {
			Err         string `json:"err"`
			Description string `json:"description"`
		}
		json.Unmarshal(body, &e)
		return fmt.Errorf("receiver answered %s %s %s", resp.Status, e.Err, e.Description)
	}
	return nil
}
