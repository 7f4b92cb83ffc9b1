// toolbox: a tiny static image for looking at the real node from inside a pod, in place of the
// busybox a registry would give (devcluster's tests use it; so can anyone on `make dev`).
//
//	toolbox serve [PORT]      HTTP on PORT (8080): "HOSTNAME PATH\n" for every request; exits on TERM
//	toolbox get URL           print the body of URL; exit 1 unless 2xx
//	toolbox lookup NAME       print NAME's addresses from the pod's DNS; exit 1 if none
//	toolbox incluster PATH    GET PATH from the API server as the pod's service account, found
//	                          the way client libraries' in-cluster config finds it
//	toolbox cat FILE          print FILE
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

const serviceAccount = "/var/run/secrets/kubernetes.io/serviceaccount/"

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: toolbox serve [PORT] | get URL | lookup NAME | incluster PATH | cat FILE"))
	}
	arg := func(i int, fallback string) string {
		if len(os.Args) > i {
			return os.Args[i]
		}
		return fallback
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(arg(2, "8080"))
	case "get":
		err = get(http.DefaultClient, arg(2, ""), nil)
	case "lookup":
		err = lookup(arg(2, ""))
	case "incluster":
		err = incluster(arg(2, "/version"))
	case "cat":
		err = cat(arg(2, ""))
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "toolbox:", err)
	os.Exit(1)
}

func serve(port string) error {
	host, _ := os.Hostname()
	server := &http.Server{Addr: ":" + port, ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s\n", host, r.URL.Path)
		})}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() { <-ctx.Done(); server.Close() }()
	fmt.Println("serving on port", port)
	if err := server.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func get(client *http.Client, url string, header http.Header) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	client.Timeout = 10 * time.Second
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

func lookup(name string) error {
	addrs, err := net.LookupHost(name)
	if err != nil {
		return err
	}
	fmt.Println(strings.Join(addrs, "\n"))
	return nil
}

// incluster does what client-go's rest.InClusterConfig does: the API server is the `kubernetes`
// Service from the environment, verified with the cluster CA from the service-account volume.
func incluster(path string) error {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return errors.New("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set")
	}
	token, err := os.ReadFile(serviceAccount + "token")
	if err != nil {
		return err
	}
	ca, err := os.ReadFile(serviceAccount + "ca.crt")
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		return errors.New("no certificate in " + serviceAccount + "ca.crt")
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	url := "https://" + net.JoinHostPort(host, port) + path
	return get(client, url, http.Header{"Authorization": {"Bearer " + strings.TrimSpace(string(token))}})
}

func cat(file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(data)
	return err
}
