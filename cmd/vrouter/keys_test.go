package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/vrouter/vrouter/router/wireguard"
)

func TestGenkeyPubkey(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := genkeyCmd(nil, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	priv, err := wireguard.ParseKey(out.String())
	if err != nil {
		t.Fatalf("genkey printed %q: %v", out.String(), err)
	}
	var pub bytes.Buffer
	if err := pubkey(nil, strings.NewReader(out.String()), &pub, &errOut); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(pub.String()); got != priv.Public().String() {
		t.Fatalf("pubkey printed %q, want %q", got, priv.Public())
	}
	// wg(8)'s own pair (the RFC 7748 vector, base64).
	pub.Reset()
	if err := pubkey(nil, strings.NewReader("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=\n"), &pub, &errOut); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(pub.String()); got != "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=" {
		t.Fatalf("pubkey of the RFC 7748 key = %q", got)
	}
	if err := pubkey(nil, strings.NewReader("not a key"), &pub, &errOut); err == nil || !strings.Contains(err.Error(), "not a WireGuard key") {
		t.Fatalf("pubkey of nonsense: %v", err)
	}
}
