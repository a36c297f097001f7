using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Colo.Demo.Tests;

/// <summary>What <see cref="FakeRedisServer"/> does with <c>SET k&lt;id&gt; v</c>.</summary>
internal enum SetAction
{
    /// <summary>Store, reply +OK.</summary>
    Ok,
    /// <summary>Reply -ERR, store nothing.</summary>
    Error,
    /// <summary>Store, then close the connection without a reply.</summary>
    CloseApplied,
    /// <summary>Never reply (until the client closes).</summary>
    Hang,
    /// <summary>Reply +OK but store nothing: a lost write.</summary>
    LoseAfterAck,
    /// <summary>Reply +OK but store a wrong value: a corrupted write.</summary>
    CorruptAfterAck,
}

/// <summary>
/// A tiny Redis server on loopback speaking RESP (arrays of bulk strings in, simple/error/bulk replies out) that
/// implements SET and GET with scripted misbehaviour per write id, for testing the disk client.
/// </summary>
internal sealed class FakeRedisServer : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _cts = new();
    private readonly Task _loop;
    private int _loadingGets;

    public FakeRedisServer()
    {
        _listener.Start();
        _loop = Task.Run(AcceptLoopAsync);
    }

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    public IPEndPoint EndPoint => new(IPAddress.Loopback, Port);

    public ConcurrentDictionary<string, string> Store { get; } = new();

    /// <summary>Misbehaviour per write id (key k&lt;id&gt;); ids not listed are <see cref="SetAction.Ok"/>.</summary>
    public ConcurrentDictionary<long, SetAction> SetActions { get; } = new();

    /// <summary>Connections accepted so far.</summary>
    public int Connections;

    /// <summary>The next this-many GETs are answered <c>-LOADING</c>.</summary>
    public int LoadingGets { set => Volatile.Write(ref _loadingGets, value); }

    /// <summary>When set, the next GET closes the connection instead of replying (once).</summary>
    public volatile bool DropOnNextGet;

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
            s.NoDelay = true;
            Interlocked.Increment(ref Connections);
            _ = Task.Run(() => ServeAsync(s));
        }
    }

    private async Task ServeAsync(Socket socket)
    {
        using (socket)
        {
            await using var raw = new NetworkStream(socket, ownsSocket: false);
            await using var stream = new BufferedStream(raw); // reads only: pipelined commands stay buffered
            try
            {
                while (true)
                {
                    string[]? cmd = await ReadCommandAsync(stream);
                    if (cmd is null)
                        return;
                    string? reply = Handle(cmd);
                    if (reply is null)
                    {
                        // Close without a reply, or hang until the client gives up.
                        if (cmd[0] == "SET" && SetActions.GetValueOrDefault(Id(cmd[1])) == SetAction.Hang)
                            while (await ReadCommandAsync(stream) is not null) { }
                        return;
                    }
                    await raw.WriteAsync(Encoding.UTF8.GetBytes(reply));
                }
            }
            catch (IOException)
            {
            }
        }
    }

    private string? Handle(string[] cmd)
    {
        switch (cmd[0].ToUpperInvariant())
        {
            case "SET" when cmd.Length == 3:
                switch (SetActions.GetValueOrDefault(Id(cmd[1])))
                {
                    case SetAction.Ok: Store[cmd[1]] = cmd[2]; return "+OK\r\n";
                    case SetAction.Error: return "-ERR injected failure\r\n";
                    case SetAction.CloseApplied: Store[cmd[1]] = cmd[2]; return null;
                    case SetAction.Hang: return null;
                    case SetAction.LoseAfterAck: return "+OK\r\n";
                    case SetAction.CorruptAfterAck: Store[cmd[1]] = cmd[2] + "x"; return "+OK\r\n";
                }
                break;
            case "GET" when cmd.Length == 2:
                if (DropOnNextGet)
                {
                    DropOnNextGet = false;
                    return null;
                }
                if (Interlocked.Decrement(ref _loadingGets) >= 0)
                    return "-LOADING Redis is loading the dataset in memory\r\n";
                return Store.TryGetValue(cmd[1], out string? v) ? $"${Encoding.UTF8.GetByteCount(v)}\r\n{v}\r\n" : "$-1\r\n";
        }
        return "-ERR unknown command\r\n";
    }

    private static long Id(string key) => key.StartsWith('k') && long.TryParse(key.AsSpan(1), out long id) ? id : -1;

    private static async Task<string[]?> ReadCommandAsync(Stream s)
    {
        string? head = await ReadLineAsync(s);
        if (head is null)
            return null;
        if (!head.StartsWith('*'))
            throw new IOException("expected an array");
        var parts = new string[int.Parse(head.AsSpan(1))];
        for (int i = 0; i < parts.Length; i++)
        {
            string len = await ReadLineAsync(s) ?? throw new IOException("eof");
            byte[] data = new byte[int.Parse(len.AsSpan(1)) + 2];
            await s.ReadExactlyAsync(data);
            parts[i] = Encoding.UTF8.GetString(data, 0, data.Length - 2);
        }
        return parts;
    }

    private static async Task<string?> ReadLineAsync(Stream s)
    {
        var sb = new StringBuilder();
        byte[] one = new byte[1];
        while (true)
        {
            if (await s.ReadAsync(one) == 0)
                return null;
            if (one[0] == '\n' && sb.Length > 0 && sb[^1] == '\r')
                return sb.ToString(0, sb.Length - 1);
            sb.Append((char)one[0]);
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
