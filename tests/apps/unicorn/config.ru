# The Rack app of the Unicorn and Puma tests: it names the worker (and its master) that
# answered. While the file $SICK_FILE exists, /health answers 503.
sick = ENV["SICK_FILE"]
run lambda { |env|
  if env["PATH_INFO"] == "/health" && sick && File.exist?(sick)
    next [503, { "content-type" => "text/plain", "content-length" => "5" }, ["sick\n"]]
  end
  body = %({"pid": #{Process.pid}, "ppid": #{Process.ppid}}\n)
  [200, { "content-type" => "application/json", "content-length" => body.bytesize.to_s }, [body]]
}
