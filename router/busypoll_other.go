//go:build !linux

package router

import (
	"errors"
	"time"
)

// busyPollOS says why the router cannot busy-poll here.
var busyPollOS = errors.New("busy polling needs Linux")

// pollLoop is not called where busyPollOS is set.
func (r *Router) pollLoop(time.Duration) error { return busyPollOS }
