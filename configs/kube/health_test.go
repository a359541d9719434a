package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestClassify(t *testing.T) {
	gr := schema.GroupResource{Resource: "nodes"}
	refused := &url.Error{Op: "Get", URL: "https://192.0.2.1:6443/api/v1/nodes", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	tests := []struct {
		err        error
		wantCause  string // substring; "" with benign
		wantBenign bool
	}{
		{apierrors.NewForbidden(gr, "", errors.New(`User "vrouter" cannot list resource "nodes"`)), "forbidden: these credentials may not list and watch nodes", false},
		{fmt.Errorf("failed to list *v1.Node: %w", apierrors.NewForbidden(gr, "", errors.New("no"))), "forbidden", false},
		{apierrors.NewUnauthorized("Unauthorized"), "rejected the credentials", false},
		{refused, "cannot reach the API server", false},
		{fmt.Errorf("failed to list *v1.Node: %w", context.DeadlineExceeded), "cannot reach the API server", false},
		{apierrors.NewTooManyRequests("slow down", 1), "throttling", false},
		{apierrors.NewResourceExpired("too old resource version: 1 (5)"), "", true},
		{io.EOF, "", true},
		{context.Canceled, "", true},
		{errors.New("very short watch: Unexpected watch close"), "unexpected error", false},
	}
	for _, tt := range tests {
		cause, benign := classify("nodes", tt.err)
		if benign != tt.wantBenign || !strings.Contains(cause, tt.wantCause) {
			t.Errorf("classify(%v) = %q, %v; want a cause containing %q, benign %v", tt.err, cause, benign, tt.wantCause, tt.wantBenign)
		}
	}
}
