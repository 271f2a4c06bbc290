package notify

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestWebhookRefusesNonPublicAddresses(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	if _, err := webhookClient(false).Post(srv.URL, "application/json", strings.NewReader("{}")); err == nil || !strings.Contains(err.Error(), "non-public") {
		t.Fatalf("loopback webhook without permission: %v", err)
	}
	resp, err := webhookClient(true).Post(srv.URL, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatalf("loopback webhook with permission: %v", err)
	}
	resp.Body.Close()
	for _, private := range []string{"http://10.0.0.1:1/x", "http://192.168.1.1:1/x", "http://169.254.169.254/latest/meta-data", "http://[fd00::1]:1/x",
		// Issue 15: shared address space, "this network", benchmarking,
		// reserved and NAT64, which net.IP's predicates do not cover.
		"http://100.64.0.1:1/x", "http://0.1.2.3:1/x", "http://198.18.0.1:1/x", "http://240.0.0.1:1/x", "http://[64:ff9b::a00:1]:1/x"} {
		if _, err := webhookClient(true).Post(private, "application/json", strings.NewReader("{}")); err == nil || !strings.Contains(err.Error(), "non-public") {
			t.Fatalf("%s: %v", private, err)
		}
	}
}
