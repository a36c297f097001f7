using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Colo.Demo.Tests;

/// <summary>A fact that is skipped (with a message) unless running as root with iproute2 and ping.</summary>
public sealed class RootFactAttribute : FactAttribute
{
    public RootFactAttribute()
    {
        if (Environment.UserName != "root" && !IsUidZero())
            Skip = "requires root (network namespaces); skipped";
        else if (!TestTools.OnPath("ip"))
            Skip = "requires iproute2 (`ip`); skipped";
        else if (!TestTools.OnPath("ping"))
            Skip = "requires `ping` (apt-get install -y iputils-ping); skipped";
    }

    private static bool IsUidZero()
    {
        try
        {
            return File.ReadAllLines("/proc/self/status").Any(l => l.StartsWith("Uid:", StringComparison.Ordinal) && l.Split('\t', StringSplitOptions.RemoveEmptyEntries)[1] == "0");
        }
        catch (IOException)
        {
            return false;
        }
    }
}

/// <summary>A fact that is skipped (with a message) unless redis-server and redis-benchmark are installed.</summary>
public sealed class RedisFactAttribute : FactAttribute
{
    public RedisFactAttribute()
    {
        if (!TestTools.OnPath("redis-server") || !TestTools.OnPath("redis-benchmark"))
            Skip = "requires redis-server and redis-benchmark (apt-get install -y redis-server redis-tools); skipped";
    }
}

internal static class TestTools
{
    public static bool OnPath(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin:/usr/sbin:/sbin")
            .Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Concat(["/usr/sbin", "/sbin"])
            .Any(d => File.Exists(Path.Combine(d, name)));

    /// <summary>A free loopback port below the ephemeral range (so a client can never self-connect to it).</summary>
    public static int FreeLoopbackPort()
    {
        while (true)
        {
            int port = Random.Shared.Next(20000, 30000);
            try
            {
                var l = new TcpListener(IPAddress.Loopback, port);
                l.Start();
                l.Stop();
                return port;
            }
            catch (SocketException)
            {
            }
        }
    }

    public static async Task<ProcessResult> RunAsync(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file);
        foreach (string a in args)
            psi.ArgumentList.Add(a);
        return await DemoProcess.RunAsync(psi, TimeSpan.FromSeconds(15));
    }
}

/// <summary>A redis-server on a loopback port, killed by its PID on dispose.</summary>
internal sealed class RedisServer : IDisposable
{
    private Process? _process;

    public RedisServer(int port)
    {
        Port = port;
    }

    public int Port { get; }

    public static async Task<RedisServer> StartAsync(int? port = null)
    {
        var server = new RedisServer(port ?? TestTools.FreeLoopbackPort());
        await server.StartAgainAsync();
        return server;
    }

    public async Task StartAgainAsync()
    {
        var psi = new ProcessStartInfo("redis-server")
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (string a in new[] { "--port", Port.ToString(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no" })
            psi.ArgumentList.Add(a);
        _process = Process.Start(psi) ?? throw new InvalidOperationException("redis-server did not start");
        _process.OutputDataReceived += (_, _) => { };
        _process.ErrorDataReceived += (_, _) => { };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (true)
        {
            try
            {
                using var c = new TcpClient();
                await c.ConnectAsync(IPAddress.Loopback, Port);
                return;
            }
            catch (SocketException) when (DateTime.UtcNow < deadline && !_process.HasExited)
            {
                await Task.Delay(50);
            }
        }
    }

    public void Kill()
    {
        if (_process is null)
            return;
        try
        {
            if (!_process.HasExited)
                _process.Kill();
            _process.WaitForExit(5000);
        }
        catch (InvalidOperationException)
        {
        }
        _process.Dispose();
        _process = null;
    }

    public void Dispose() => Kill();
}

/// <summary>Minimal HTTP/1.0 server answering every request with "counter=N" and closing.</summary>
internal sealed class CounterHttpServer : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _cts = new();
    private readonly Task _loop;
    private long _counter;

    public CounterHttpServer()
    {
        _listener.Start();
        _loop = Task.Run(AcceptLoopAsync);
    }

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    public long Served => Interlocked.Read(ref _counter);

    private async Task AcceptLoopAsync()
    {
        while (!_cts.IsCancellationRequested)
        {
            Socket s;
            try
            {
                s = await _listener.AcceptSocketAsync(_cts.Token);
            }
            catch (Exception) when (_cts.IsCancellationRequested)
            {
                return;
            }
            _ = Task.Run(() => ServeAsync(s));
        }
    }

    private async Task ServeAsync(Socket s)
    {
        using (s)
        {
            try
            {
                var buf = new byte[4096];
                var req = new StringBuilder();
                while (!req.ToString().Contains("\r\n\r\n", StringComparison.Ordinal))
                {
                    int n = await s.ReceiveAsync(buf, SocketFlags.None);
                    if (n == 0)
                        return;
                    req.Append(Encoding.ASCII.GetString(buf, 0, n));
                }
                bool ok = req.ToString().StartsWith("GET /cgi-bin/counter ", StringComparison.Ordinal);
                long value = Interlocked.Increment(ref _counter);
                string body = ok ? $"counter={value}\n" : "not found\n";
                string resp = (ok ? "HTTP/1.0 200 OK\r\n" : "HTTP/1.0 404 Not Found\r\n") + $"Content-Type: text/plain\r\nContent-Length: {body.Length}\r\n\r\n{body}";
                await s.SendAsync(Encoding.ASCII.GetBytes(resp), SocketFlags.None);
                s.Shutdown(SocketShutdown.Both);
            }
            catch (SocketException)
            {
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        _cts.Cancel();
        _listener.Stop();
        try
        {
            await _loop;
        }
        catch (Exception)
        {
        }
        _cts.Dispose();
    }
}
