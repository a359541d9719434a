package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer is a bytes.Buffer safe for a command writing while the test
// reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// vrtest runs `vrtest args...` in-process with env as its environment and
// returns its stdout, stderr and exit code.
func vrtest(ctx context.Context, env map[string]string, args ...string) (stdout, stderr string, code int) {
	var out, errOut syncBuffer
	code = run(ctx, environ{stdout: &out, stderr: &errOut, getenv: func(k string) string { return env[k] }}, args)
	return out.String(), errOut.String(), code
}

// mustVrtest runs vrtest and fails the test unless it exits 0.
func mustVrtest(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := vrtest(context.Background(), nil, args...)
	if code != 0 {
		t.Fatalf("vrtest %s: exit %d, stderr %q", strings.Join(args, " "), code, errOut)
	}
	return out
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		code    int
		errPart string
	}{
		{nil, 2, "usage: vrtest COMMAND"},
		{[]string{"nope"}, 2, `unknown command "nope"`},
		{[]string{"get"}, 2, "0 arguments [], want 1"},
		{[]string{"tcp", "127.0.0.1:1"}, 2, "want 2"},
		{[]string{"resolve", "x", "--type", "MX"}, 2, `--type "MX": want A or AAAA`},
		{[]string{"get", "--bogus", "http://x/"}, 2, "flag provided but not defined: -bogus"},
	} {
		_, errOut, code := vrtest(context.Background(), nil, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.errPart) {
			t.Errorf("vrtest %q: exit %d, stderr %q; want exit %d, stderr with %q", tc.args, code, errOut, tc.code, tc.errPart)
		}
	}
}
