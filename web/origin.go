package web

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// ParseOrigin checks that s is an http or https origin, a scheme and a
// host with an optional port and nothing else (such as
// "https://ferry.example.com:8443" or "http://127.0.0.1:8080"), and returns
// it as browsers serialize origins: scheme and host in lower case, without
// a trailing "/" and without the scheme's default port (80, 443). The host
// is a DNS name in ASCII (punycode for other scripts), an IPv4 address or
// a bracketed IPv6 address; wildcards are refused. It is what
// [Options.PageServers] holds, and what `ferry serve --page-server` takes.
func ParseOrigin(s string) (string, error) {
	bad := func(why string) error {
		return fmt.Errorf("%q is not an http or https origin such as https://ferry.example.com:8443: %s", s, why)
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "", bad("it does not parse as a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return "", bad("the scheme must be http or https")
	case u.Opaque != "" || u.Host == "":
		return "", bad("it has no host (write scheme://host:port)")
	case u.User != nil:
		return "", bad("it holds a user name or password")
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.ForceQuery, u.Fragment != "":
		return "", bad("an origin has no path, query or fragment")
	}
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if strings.HasSuffix(u.Host, ":") {
		return "", bad("the port is empty")
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || strings.HasPrefix(port, "0") {
			return "", bad("the port must be a number from 1 to 65535")
		}
		if (u.Scheme == "http" && n == 80) || (u.Scheme == "https" && n == 443) {
			port = ""
		}
	}
	if strings.HasPrefix(u.Host, "[") {
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", bad("the host in brackets must be an IPv6 address without a zone")
		}
		host = "[" + a.String() + "]"
	} else if !validHostname(host) {
		return "", bad("the host must be a DNS name in ASCII letters, digits, '-' and '.', or an IP address")
	}
	if port != "" {
		return u.Scheme + "://" + net.JoinHostPort(strings.Trim(host, "[]"), port), nil
	}
	return u.Scheme + "://" + host, nil
}

// validHostname reports whether h is a DNS name of ASCII letters, digits
// and hyphens in dot-separated labels of 1 to 63 characters (an IPv4
// address is one), at most 253 characters in all.
func validHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
