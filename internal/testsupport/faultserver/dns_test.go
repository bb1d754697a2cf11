package faultserver

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// TestDNS: the resolver pointed at the server gets the error each response
// code stands for, and the server answered it.
func TestDNS(t *testing.T) {
	for _, tt := range []struct {
		rcode               int
		notFound, temporary bool
	}{
		{RcodeNXDomain, true, false},
		{RcodeServFail, false, true},
	} {
		s := NewDNS(tt.rcode)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // a bound, not an expectation
		_, err := s.Resolver().LookupHost(ctx, "api.nosuch.test")
		cancel()
		s.Close()
		var de *net.DNSError
		if !errors.As(err, &de) || de.IsNotFound != tt.notFound || de.IsTemporary != tt.temporary {
			t.Errorf("rcode %d: lookup error %#v; want IsNotFound=%v IsTemporary=%v", tt.rcode, err, tt.notFound, tt.temporary)
		}
		if s.Queries() == 0 {
			t.Errorf("rcode %d: the server answered no query", tt.rcode)
		}
	}
}

// TestDNSIgnoresMalformed: what is not a one-question query gets no answer.
func TestDNSIgnoresMalformed(t *testing.T) {
	s := &DNS{rcode: RcodeNXDomain}
	for _, q := range [][]byte{
		nil,
		make([]byte, 11),
		{0, 1, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1}, // a response
		{0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1},    // two questions
		{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'a', 'b'},      // cut name
		{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1},
	} {
		if r := s.answer(q); r != nil {
			t.Errorf("answer(%v) = %v; want none", q, r)
		}
	}
}

// TestDNSNoAnswer: the query arrives, no answer does, and the lookup ends
// with the caller's deadline.
func TestDNSNoAnswer(t *testing.T) {
	s := NewDNS(NoAnswer)
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := s.Resolver().LookupHost(ctx, "api.nosuch.test")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsTimeout || de.IsNotFound {
		t.Fatalf("lookup error %#v; want a timeout", err)
	}
	select {
	case <-s.Asked():
	case <-time.After(10 * time.Second): // a failure bound: the query may still be in flight
		t.Error("the resolver never asked")
	}
}
