;; A Ring app on Jetty, run the way the JVM apps supervisord-lite was made for run:
;; `java -cp <Debian's jars> clojure.main app.clj` (no build tool, no AOT).
;; tests/test_jvm.py and tests/bench/bench_jvm.py run it; etc/ shows its config.
;;
;; The socket: with SOCKET=stdin it serves on the listening socket it inherited as
;; its standard input (`socket_activation: stdin`; Java's System.inheritedChannel(),
;; Jetty's ServerConnector.setInheritChannel), and exits at once, saying why, when
;; there is none; otherwise it binds HOST:PORT itself (`socket_activation: false`).
;;
;; Knobs (environment): WARMUP=command runs that command (`sh -c`, with the port of a
;; private loopback connector in $WARM_PORT) before the app takes its real socket: the
;; JIT warms before the app shares any traffic (etc/clojure-jetty.yaml has one;
;; docs/jvm.md says what it must send); HANG_ON_STOP=1, or a file HANG_ON_STOP in the
;; working directory when it is stopped, makes its shutdown hook never return (the
;; supervisor must SIGKILL it after stop.timeout); THROW_AT_BOOT=text, or a file
;; THROW_AT_BOOT in the working directory (a broken release), throws at boot;
;; APP_VERSION names the release, else the name of the working directory
;; (releases/NAME) does.
;;
;; On SIGTERM it drains before Jetty stops: stops accepting, answers every connection it
;; accepted (docs/jvm.md, "Graceful stop"), then lets Jetty finish what is in flight.
;;
;; Routes: /health, /version (the release it runs), /grow?mb=N (keeps N MiB more of
;; native memory: RSS for max_memory), anything else: a small JSON page built per request.
(ns app
  (:require [clojure.java.io :as io]
            [clojure.string :as str]
            [ring.adapter.jetty :as jetty])
  (:import [java.io File]
           [java.lang ProcessHandle]
           [java.nio.channels ServerSocketChannel]
           [java.util Set]
           [java.util.concurrent ConcurrentHashMap CountDownLatch TimeUnit]
           [java.util.concurrent.atomic AtomicLong]
           [org.eclipse.jetty.io Connection Connection$Listener ManagedSelector
            ManagedSelector$SelectorUpdate SelectorManager$AcceptListener]
           [org.eclipse.jetty.server HttpChannel$Listener Request Server ServerConnector]
           [org.eclipse.jetty.server.handler StatisticsHandler]))

;; Reflection is slow on every call and warms separately from the code around it: a
;; request path that reflects is not warm when the warm-up ran elsewhere (see WARMUP)
(set! *warn-on-reflection* true)

(defn env [k] (let [v (System/getenv k)] (when-not (str/blank? v) v)))

(def ^File cwd (.getCanonicalFile (io/file ".")))
(def version (or (env "APP_VERSION") (.getName cwd)))
(def pid (.pid (ProcessHandle/current)))

(when-let [why (or (env "THROW_AT_BOOT")
                   (let [f (io/file cwd "THROW_AT_BOOT")] (when (.exists f) (str/trim (slurp f)))))]
  (throw (IllegalStateException. (str "boot failed: " why))))

(def inherited
  (when (= "stdin" (env "SOCKET"))
    (let [ch (System/inheritedChannel)]
      (when-not (instance? ServerSocketChannel ch)
        (binding [*out* *err*]
          (println (str "app.clj: no listening socket on standard input (System.inheritedChannel() is "
                        (pr-str ch) "); run it with socket_activation: stdin"))
          (flush))
        (System/exit 3))
      ch)))

(def hoard (atom []))  ;; what /grow keeps

;; Off the heap (direct buffers, zeroed, so every page is touched): RSS grows as with a
;; leak of native memory, and the collector has nothing to copy, so the JVM keeps
;; answering its health checks meanwhile (500 MiB of arrays on the serial collector
;; stalled it for seconds on a busy machine: a liveness replacement, not max_memory's)
(defn grow [mb]
  (swap! hoard conj (vec (repeatedly mb #(java.nio.ByteBuffer/allocateDirect (* 1024 1024)))))
  (str "grew " mb " MiB\n"))

(defn page
  "What a real handler does per request: build data, render it."
  [req]
  (let [items (for [i (range 20)]
                {:id i :name (str "item-" i) :score (mod (* i 7919) 101)
                 :tags (str/join "," (map #(str "t" %) (range (mod i 4))))})
        rows (str/join "," (for [{:keys [id name score tags]} (sort-by :score items)]
                             (format "{\"id\":%d,\"name\":\"%s\",\"score\":%d,\"tags\":\"%s\"}"
                                     id name score tags)))]
    (str "{\"release\":\"" version "\",\"pid\":" pid ",\"path\":\"" (:uri req)
         "\",\"items\":[" rows "]}\n")))

(defn handler [req]
  (case (:uri req)
    "/health" {:status 200 :headers {"Content-Type" "text/plain"} :body "ok\n"}
    "/version" {:status 200 :headers {"Content-Type" "text/plain"} :body (str version "\n")}
    "/grow" (let [mb (some->> (:query-string req) (re-find #"mb=(\d+)") second Integer/parseInt)]
              {:status 200 :headers {"Content-Type" "text/plain"} :body (str pid " " (grow (or mb 64)))})
    {:status 200 :headers {"Content-Type" "application/json"} :body (page req)}))

(defn warm-up
  "Runs the WARMUP command (``sh -c``, the private connector's port in ``$WARM_PORT``)
  and waits for it; a failed warm-up fails the boot. The load comes from another
  process on purpose: the same number of requests sent from threads inside this JVM
  warmed it far less (its first second after going live: 5.3 k req/s and p99 5.3 ms,
  against 8.7 k and 3.4 ms warmed by wrk from outside, steady 10 k and 2 ms; docs/jvm.md)."
  [^String command port]
  (let [pb (doto (ProcessBuilder. ^java.util.List (list "sh" "-c" command))
             ;; standard input may be the listening socket (SOCKET=stdin): not the warm-up's
             (.redirectInput (java.lang.ProcessBuilder$Redirect/from (io/file "/dev/null")))
             (.redirectOutput java.lang.ProcessBuilder$Redirect/INHERIT)
             (.redirectError java.lang.ProcessBuilder$Redirect/INHERIT))
        _ (.put (.environment pb) "WARM_PORT" (str port))
        status (.waitFor (.start pb))]
    (when-not (zero? status)
      (binding [*out* *err*]
        (println (str "app.clj: the warm-up command exited with " status ": " command))
        (flush))
      (System/exit 4))))

(def public (atom nil))  ;; the connector that serves traffic (and first the warm-up's)

;; The graceful stop on a shared socket. Jetty 9.4's own stop (setStopAtShutdown) closes
;; its listening channel, waits for the requests that reached a handler
;; (StatisticsHandler), then closes every other connection: one it accepted whose
;; request had not arrived or not been parsed yet is closed unanswered. With one
;; listening socket shared by two JVMs, the other JVM would have taken that client, had
;; this one not accepted it. So SIGTERM first stops accepting, then waits until every
;; connection this JVM accepted has been answered (or closed by its client), and only
;; then lets Jetty stop.
(def accepts (AtomicLong.))  ;; accept()ed, not yet a connection (or failed)
(def ^Set unanswered (ConcurrentHashMap/newKeySet))  ;; open connections owing a response

(def accept-listener
  (reify SelectorManager$AcceptListener
    (onAccepting [_ _] (.incrementAndGet ^AtomicLong accepts))
    (onAccepted [_ _] (.decrementAndGet ^AtomicLong accepts))
    (onAcceptFailed [_ _ _] (.decrementAndGet ^AtomicLong accepts))))

(def connection-listener
  (reify Connection$Listener
    (onOpened [_ c] (.add unanswered c))
    (onClosed [_ c] (.remove unanswered c))))

(def request-listener
  (reify HttpChannel$Listener
    (onRequestBegin [_ r] (.add unanswered (.getConnection (.getHttpChannel ^Request r))))
    (onComplete [_ r] (.remove unanswered (.getConnection (.getHttpChannel ^Request r))))))

(defn stop-accepting
  "Takes ``c``'s listening channel off its selector, and returns once it is off. ``c``
  has no acceptor threads (the selector accepts, non-blocking), so setAccepting false
  leaves nothing inside accept() and the channel open (closing an inherited channel
  makes the JDK point fds 0-2 at /dev/null: the JVM's output after that would be
  lost); but it only queues the removal on the selector thread, which goes on
  accepting until it runs it: a connection accepted then, after drain had found
  nothing owed, reached Jetty's stop and was closed unanswered (a failed request in
  tests/test_jvm.py's deploy, on a busy machine). A selector runs what is queued in
  order, and counts each connection it accepts (accepts) before it looks at its
  queue again: once something queued after the removal has run, every connection
  this JVM will ever accept is counted."
  [^ServerConnector c]
  (.setAccepting c false)
  (let [selectors (.getBeans (.getSelectorManager c) ManagedSelector)
        off (CountDownLatch. (count selectors))]
    (doseq [^ManagedSelector s selectors]
      (.submit s (reify ManagedSelector$SelectorUpdate
                   (update [_ _] (.countDown off)))))
    (.await off 5 TimeUnit/SECONDS)))

(defn drain
  "Stop accepting on ``c``, then wait (up to ``ms``) until everything accepted is answered."
  [^ServerConnector c ms]
  (stop-accepting c)
  (let [deadline (+ (System/currentTimeMillis) ms)]
    (loop []
      (when (and (< (System/currentTimeMillis) deadline)
                 (or (pos? (.get ^AtomicLong accepts)) (not (.isEmpty unanswered))))
        (Thread/sleep 10)
        (recur)))))

(def stop-timeout-ms 20000)

(defn configure [^Server server]
  ;; graceful stop on SIGTERM: the shutdown hook below drains, then Jetty stops,
  ;; finishing what is in flight (StatisticsHandler, up to the stop timeout)
  (.setStopTimeout server stop-timeout-ms)
  (let [stats (StatisticsHandler.)]
    (.setHandler stats (.getHandler server))
    (.setHandler server stats))
  (let [^ServerConnector ring-c (first (.getConnectors server))
        ;; the same connector with 0 acceptor threads: the selector accepts (see drain)
        c (doto (ServerConnector. server (int 0) (int -1))
            (-> .getSelectorManager (.addAcceptListener accept-listener))
            (.addBean connection-listener)
            (.addBean request-listener))]
    (.removeConnector server ring-c)
    (.addConnector server c)
    (reset! public c)
    (if (env "WARMUP")
      (doto c (.setHost "127.0.0.1") (.setPort 0))  ;; private until warm, see go-live
      (if inherited
        (.setInheritChannel c true)
        (doto c (.setHost (.getHost ring-c)) (.setPort (.getPort ring-c)))))))

(defn go-live
  "After the warm-up: the connector that took the warm-up's load swaps its private
  channel for the real one (the inherited channel, or HOST:PORT). The same connector,
  selector, buffer pool and scheduler then serve: with a second connector opened for
  the traffic (new objects behind the same call sites), the JIT threw away 40-94
  compiled methods in the first second, against 14-30 this way (docs/jvm.md)."
  [^ServerConnector c host port]
  (.setAccepting c false)
  (.close c)
  (if inherited
    (.setInheritChannel c true)
    (doto c (.setHost host) (.setPort (int port))))
  (.open c)
  ;; what start does for a connector without acceptor threads: the selector accepts
  (.configureBlocking ^ServerSocketChannel (.getTransport c) false)
  (.setAccepting c true))

(declare server)

;; SIGTERM: drain, then Jetty's stop (which closes the inherited channel, and with it the
;; JVM's stdout and stderr: so one hook, that says it hangs before anything is closed).
;; A SIGTERM during boot finds no connector or server yet.
(.addShutdownHook (Runtime/getRuntime)
                  (Thread. #(if (or (env "HANG_ON_STOP") (.exists (io/file cwd "HANG_ON_STOP")))
                              (do (println "shutdown hook: hanging") (flush)
                                  (Thread/sleep Long/MAX_VALUE))
                              (do (some-> @public (drain stop-timeout-ms))
                                  (when (bound? #'server) (.stop ^Server server))))))

(def host (or (env "HOST") "127.0.0.1"))
(def port (Integer/parseInt (or (env "PORT") "0")))

(def server
  (jetty/run-jetty handler {:host host
                            :port port
                            :join? false
                            :configurator configure}))

(defn -main
  "Everything after the server starts, in one function compiled before the warm-up:
  a top-level form evaluated after go-live runs Clojure's compiler (it generates and
  loads a class per form) on the warm JVM, and the JIT then threw away compiled JDK
  code the request path shares with it (ConcurrentHashMap's, -XX:+PrintCompilation)."
  []
  (when-let [command (env "WARMUP")]
    (let [started (System/nanoTime)]
      (warm-up command (.getLocalPort ^ServerConnector @public))
      ;; the JIT compiles in the background: the hot path is only fast once its queue is
      ;; empty, so wait until no compilation ran for 0.6 s (at most 30 s)
      (let [jit (java.lang.management.ManagementFactory/getCompilationMXBean)
            until (+ (System/nanoTime) 30e9)]
        (loop [last -1 quiet 0]
          (let [now (.getTotalCompilationTime jit)]
            (when (and (< quiet 3) (< (System/nanoTime) until))
              (Thread/sleep 200)
              (recur now (if (= now last) (inc quiet) 0))))))
      (println (str "warmed up in " (quot (- (System/nanoTime) started) 1000000) " ms"))
      (go-live @public host port)))
  (println (str "serving " version " (pid " pid ")" (when inherited " on the inherited socket")))
  (flush)
  (.join ^Server server))

(-main)
