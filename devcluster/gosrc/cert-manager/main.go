// cert-manager's controller and cainjector for the local cluster, in one binary:
//
//	cert-manager controller --kubeconfig=FILE [--health-address=127.0.0.1:PORT] [--feature-gates=...] [-v=N]
//	cert-manager cainjector --kubeconfig=FILE [--health-address=127.0.0.1:PORT] [--feature-gates=...] [-v=N]
//
// cert-manager's own mains (cmd/controller, cmd/cainjector) are nested modules whose paths
// (github.com/cert-manager/cert-manager/controller-binary, ...) are not their directories, so the
// Go module proxy cannot serve them; the published module github.com/cert-manager/cert-manager
// holds everything they call. This main wires the same public pieces: the controller's context
// factory and registered control loops, and cainjector's controller-runtime manager with every
// injector. It runs as a process beside the apiserver, like KCM: no leader election, no metrics,
// a kubeconfig with the cluster's admin identity.
//
// A control loop registers itself when its package is imported, and so does an issuer type.
// Imported here: the Certificate loops, CertificateRequest approval, and the SelfSigned and CA
// issuers, which is what charts/autocrane's tls.mode=cert-manager uses. ACME, Vault, Venafi,
// ClusterIssuers and the ingress/gateway shims are left out: their SDKs would double the build,
// and an Issuer of those kinds is reported as unsupported by the issuers loop.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apiext "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	kscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	apireg "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	cmscheme "github.com/cert-manager/cert-manager/pkg/client/clientset/versioned/scheme"
	"github.com/cert-manager/cert-manager/pkg/controller"
	"github.com/cert-manager/cert-manager/pkg/controller/cainjector"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"github.com/cert-manager/cert-manager/pkg/util"
	utilfeature "github.com/cert-manager/cert-manager/pkg/util/feature"

	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

type options struct {
	kubeconfig    string
	namespace     string
	healthAddress string
	workers       int
	ownerRef      bool
}

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "controller" && os.Args[1] != "cainjector") {
		fmt.Fprintln(os.Stderr, "usage: cert-manager controller|cainjector [flags] (-h for the flags)")
		os.Exit(2)
	}
	role := os.Args[1]
	flags := flag.NewFlagSet("cert-manager "+role, flag.ExitOnError)
	var opts options
	flags.StringVar(&opts.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster (required)")
	flags.StringVar(&opts.namespace, "namespace", "", "watch only this namespace (default: all)")
	flags.StringVar(&opts.healthAddress, "health-address", "127.0.0.1:0", "where /livez answers once the loops run")
	if role == "controller" {
		flags.IntVar(&opts.workers, "workers", 5, "workers per control loop (cert-manager's default)")
		flags.BoolVar(&opts.ownerRef, "enable-certificate-owner-ref", false,
			"make each Certificate the owner of its Secret, so deleting it deletes the Secret")
	}
	flags.Func("feature-gates", "cert-manager feature gates, e.g. CAInjectorMerging=false (its defaults otherwise)",
		utilfeature.DefaultMutableFeatureGate.Set)
	klog.InitFlags(flags) // -v=N: cert-manager logs issuance at 2, its reasoning at 4 and up
	_ = flags.Parse(os.Args[2:])
	if opts.kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "error: --kubeconfig is required")
		os.Exit(2)
	}

	logf.InitLogs()
	defer logf.FlushLogs()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = logf.NewContext(ctx, logf.Log, role)

	var err error
	if role == "controller" {
		err = runController(ctx, opts)
	} else {
		err = runCAInjector(ctx, opts)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		logf.Log.Error(err, "exiting", "role", role)
		logf.FlushLogs()
		os.Exit(1)
	}
}

// runController starts every control loop this binary registers, then the informers they use.
func runController(ctx context.Context, opts options) error {
	log := logf.FromContext(ctx)
	factory, err := controller.NewContextFactory(ctx, controller.ContextOptions{
		Kubeconfig:         opts.kubeconfig,
		KubernetesAPIQPS:   20,
		KubernetesAPIBurst: 50,
		Namespace:          opts.namespace,
		IssuerOptions:      controller.IssuerOptions{ClusterResourceNamespace: "kube-system"},
		CertificateOptions: controller.CertificateOptions{EnableOwnerRef: opts.ownerRef},
		SchedulerOptions:   controller.SchedulerOptions{MaxConcurrentChallenges: 60},
	})
	if err != nil {
		return fmt.Errorf("building the controller context: %w", err)
	}
	base, err := factory.Build()
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	names := slices.Sorted(maps.Keys(controller.Known()))
	for _, name := range names {
		loop, err := controller.Known()[name](factory)
		if err != nil {
			return fmt.Errorf("starting control loop %s: %w", name, err)
		}
		g.Go(func() error { return loop.Run(opts.workers, ctx) })
	}
	log.Info("control loops started", "loops", names)
	// Informers are started after the loops have asked for theirs (the factories start only those).
	base.SharedInformerFactory.Start(ctx.Done())
	base.KubeSharedInformerFactory.Start(ctx.Done())
	base.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())
	g.Go(func() error { return serveLivez(ctx, opts.healthAddress) })
	err = g.Wait()
	base.HTTP01ResourceMetadataInformersFactory.Shutdown()
	base.KubeSharedInformerFactory.Shutdown()
	base.SharedInformerFactory.Shutdown()
	return err
}

// serveLivez answers 200 on /livez until ctx ends; the address it bound is logged (port 0 works).
func serveLivez(ctx context.Context, address string) error {
	listener, err := (&net.ListenConfig{}).Listen(ctx, "tcp", address)
	if err != nil {
		return fmt.Errorf("listening for /livez on %s: %w", address, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	logf.FromContext(ctx).Info("serving /livez", "address", listener.Addr().String())
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = server.Shutdown(shutdown) //nolint:contextcheck // ctx is done: shut down within 5 s
	}()
	if err := server.Serve(listener); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// runCAInjector runs cainjector's reconcilers for the four injectable kinds, reading CAs from
// Certificates' Secrets (cert-manager.io/inject-ca-from), Secrets and the kubeconfig.
func runCAInjector(ctx context.Context, opts options) error {
	restConfig, err := clientcmd.BuildConfigFromFlags("", opts.kubeconfig)
	if err != nil {
		return fmt.Errorf("reading %s: %w", opts.kubeconfig, err)
	}
	restConfig = util.RestConfigWithUserAgent(restConfig, "cainjector")
	scheme := runtime.NewScheme()
	utilruntime.Must(kscheme.AddToScheme(scheme))
	utilruntime.Must(cmscheme.AddToScheme(scheme))
	utilruntime.Must(apiext.AddToScheme(scheme))
	utilruntime.Must(apireg.AddToScheme(scheme))
	ctrl.SetLogger(logf.FromContext(ctx))
	managerOptions := ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: opts.healthAddress,
		LivenessEndpointName:   "/livez",
		// As cainjector does: Secrets are read directly, never cached whole (only their metadata is watched).
		Client: client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}},
	}
	if opts.namespace != "" {
		managerOptions.Cache.DefaultNamespaces = map[string]cache.Config{opts.namespace: {}}
	}
	manager, err := ctrl.NewManager(restConfig, managerOptions)
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	if err := manager.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	enabled := map[string]bool{}
	for _, kind := range []string{cainjector.MutatingWebhookConfigurationName, cainjector.ValidatingWebhookConfigurationName,
		cainjector.APIServiceName, cainjector.CustomResourceDefinitionName} {
		enabled[kind] = true
	}
	if err := cainjector.RegisterAllInjectors(ctx, manager, cainjector.SetupOptions{
		Namespace: opts.namespace, EnableCertificatesDataSource: true, EnabledReconcilersFor: enabled,
	}); err != nil {
		return fmt.Errorf("registering the injectors: %w", err)
	}
	logf.FromContext(ctx).Info("injectors registered", "kinds", slices.Sorted(maps.Keys(enabled)))
	return manager.Start(ctx)
}
