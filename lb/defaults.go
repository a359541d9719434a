package lb

import (
	"errors"
	"fmt"
	"time"
)

// defaults fills the zero fields of an options struct with their defaults
// and collects an error, naming the field, for each negative one. The
// options of the Proxy, the host ports and egress share it.
type defaults struct{ errs []error }

// duration sets *v to def if it is zero; a negative *v is an error.
func (d *defaults) duration(name string, v *time.Duration, def time.Duration) {
	switch {
	case *v < 0:
		d.errs = append(d.errs, fmt.Errorf("%s %v: want a positive duration, or 0 for %v", name, *v, def))
	case *v == 0:
		*v = def
	}
}

// count sets *v to def if it is zero; a negative *v is an error.
func (d *defaults) count(name string, v *int64, def int64) {
	switch {
	case *v < 0:
		d.errs = append(d.errs, fmt.Errorf("%s %d: want ≥ 1, or 0 for %d", name, *v, def))
	case *v == 0:
		*v = def
	}
}

// countInt is count for an int field.
func (d *defaults) countInt(name string, v *int, def int) {
	n := int64(*v)
	d.count(name, &n, int64(def))
	*v = int(n)
}

// err returns every error collected, or nil.
func (d *defaults) err() error { return errors.Join(d.errs...) }
