// gateway is the example shop's public front: it relays /api/... to the orders service.
// Like many real gateways it trusts its backends and sets no timeout of its own.
package main

import (
	"io"
	"log"
	"net/http"
	"os"
	"strings"
)

type gateway struct {
	ordersURL string
	client    *http.Client
}

func (g *gateway) relay(w http.ResponseWriter, r *http.Request) {
	target := g.ordersURL + strings.TrimPrefix(r.URL.Path, "/api")
	req, err := http.NewRequestWithContext(r.Context(), r.Method, target, r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req.Header.Set("Content-Type", r.Header.Get("Content-Type"))
	resp, err := g.client.Do(req)
	if err != nil {
		http.Error(w, "orders: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

func main() {
	g := &gateway{ordersURL: strings.TrimRight(os.Getenv("ORDERS_URL"), "/"), client: &http.Client{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/api/", g.relay)
	addr := os.Getenv("ADDR")
	if addr == "" {
		addr = ":8080"
	}
	log.Printf("gateway listening on %s (orders %s)", addr, g.ordersURL)
	log.Fatal(http.ListenAndServe(addr, mux))
}
