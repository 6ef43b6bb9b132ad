# A stock unicorn.rb, as an operator writes it: a pidfile, log files, preloading, and
# the classic zero-downtime recipe: on USR2 the old master re-executes itself, and the
# new master QUITs the old one (named by PIDFILE.oldbin) as it forks its first worker.
# The paths come from the environment so that primary and backup keep apart.
worker_processes 2
pid ENV.fetch("UNICORN_PID")
stderr_path ENV.fetch("UNICORN_LOG")
stdout_path ENV.fetch("UNICORN_LOG")
timeout 30
preload_app true

before_fork do |server, worker|
  old_pid = "#{server.config[:pid]}.oldbin"
  if File.exist?(old_pid) && server.pid != old_pid
    begin
      Process.kill(:QUIT, File.read(old_pid).to_i)
    rescue Errno::ENOENT, Errno::ESRCH
      # the old master is already gone
    end
  end
end
