using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Colo.Demo;

/// <summary>One RESP reply: its type byte and its text (null for a nil bulk string <c>$-1</c>).</summary>
/// <param name="Kind"><c>+</c> simple string, <c>-</c> error, <c>:</c> integer, <c>$</c> bulk string.</param>
/// <param name="Text">The payload without type byte and CRLF; null for a nil bulk string.</param>
internal readonly record struct RespReply(char Kind, string? Text)
{
    /// <summary>True for the simple string <c>+OK</c>.</summary>
    public bool IsOk => Kind == '+' && Text == "OK";

    /// <summary>True for an error reply (<c>-ERR ...</c>, <c>-LOADING ...</c>).</summary>
    public bool IsError => Kind == '-';

    /// <inheritdoc />
    public override string ToString() => Text is null ? $"{Kind}(nil)" : $"{Kind}{Text}";
}

/// <summary>
/// A minimal Redis client connection: sends RESP commands and reads simple, error, integer and bulk replies in
/// order (pipelining is the caller's business). Any socket or protocol failure leaves the connection unusable;
/// dispose it and connect again.
/// </summary>
internal sealed class RespConnection : IDisposable
{
    private const int MaxReplyBytes = 1 << 20;
    private readonly Socket _socket;
    private byte[] _buffer = new byte[64 * 1024];
    private int _start;
    private int _count;

    private RespConnection(Socket socket) => _socket = socket;

    /// <summary>Connects within <paramref name="timeout"/> (a self-connect to a free local port counts as refused).</summary>
    /// <exception cref="SocketException">Refused, unreachable, ...</exception>
    /// <exception cref="TimeoutException">No connection within <paramref name="timeout"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="ct"/> was cancelled.</exception>
    public static async Task<RespConnection> ConnectAsync(IPEndPoint endPoint, TimeSpan timeout, CancellationToken ct)
    {
        var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        using var op = CancellationTokenSource.CreateLinkedTokenSource(ct);
        op.CancelAfter(timeout);
        try
        {
            await socket.ConnectAsync(endPoint, op.Token).ConfigureAwait(false);
            if (socket.LocalEndPoint is IPEndPoint local && local.Equals(endPoint))
                throw new SocketException((int)SocketError.ConnectionRefused);
            return new RespConnection(socket);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            socket.Dispose();
            throw new TimeoutException($"connect to {endPoint} timed out after {timeout.TotalMilliseconds:0} ms");
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Builds a RESP array command, e.g. <c>*3\r\n$3\r\nSET\r\n$2\r\nk1\r\n$2\r\nv1\r\n</c>.</summary>
    public static byte[] Command(params string[] parts)
    {
        var sb = new StringBuilder();
        sb.Append('*').Append(parts.Length.ToString(CultureInfo.InvariantCulture)).Append("\r\n");
        foreach (string p in parts)
            sb.Append('$').Append(Encoding.UTF8.GetByteCount(p).ToString(CultureInfo.InvariantCulture)).Append("\r\n").Append(p).Append("\r\n");
        return Encoding.UTF8.GetBytes(sb.ToString());
    }

    /// <summary>Sends all of <paramref name="data"/>.</summary>
    public async Task SendAsync(ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        while (data.Length > 0)
        {
            int n = await _socket.SendAsync(data, SocketFlags.None, ct).ConfigureAwait(false);
            data = data[n..];
        }
    }

    /// <summary>Reads the next reply.</summary>
    /// <exception cref="IOException">The server closed the connection, or sent something that is not a supported reply.</exception>
    public async Task<RespReply> ReadReplyAsync(CancellationToken ct)
    {
        string header = await ReadLineAsync(ct).ConfigureAwait(false);
        if (header.Length == 0)
            throw new IOException("protocol error: empty reply line");
        char kind = header[0];
        string rest = header[1..];
        switch (kind)
        {
            case '+' or '-' or ':':
                return new RespReply(kind, rest);
            case '$':
                if (!int.TryParse(rest, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int len) || len < -1 || len > MaxReplyBytes)
                    throw new IOException($"protocol error: bad bulk length '{Truncate(rest)}'");
                if (len == -1)
                    return new RespReply('$', null);
                await FillAsync(len + 2, ct).ConfigureAwait(false);
                if (_buffer[_start + len] != '\r' || _buffer[_start + len + 1] != '\n')
                    throw new IOException("protocol error: bulk string not followed by CRLF");
                string text = Encoding.UTF8.GetString(_buffer, _start, len);
                Consume(len + 2);
                return new RespReply('$', text);
            default:
                throw new IOException($"protocol error: unsupported reply '{Truncate(header)}'");
        }
    }

    /// <summary>Sends one command and reads its reply within <paramref name="timeout"/>.</summary>
    /// <exception cref="TimeoutException">No complete reply within <paramref name="timeout"/>.</exception>
    public async Task<RespReply> RoundTripAsync(byte[] command, TimeSpan timeout, CancellationToken ct)
    {
        using var op = CancellationTokenSource.CreateLinkedTokenSource(ct);
        op.CancelAfter(timeout);
        try
        {
            await SendAsync(command, op.Token).ConfigureAwait(false);
            return await ReadReplyAsync(op.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new TimeoutException($"no reply within {timeout.TotalMilliseconds:0} ms");
        }
    }

    private async Task<string> ReadLineAsync(CancellationToken ct)
    {
        int scanned = 0;
        while (true)
        {
            int idx = _buffer.AsSpan(_start + scanned, _count - scanned).IndexOf("\r\n"u8);
            if (idx >= 0)
            {
                int len = scanned + idx;
                string line = Encoding.UTF8.GetString(_buffer, _start, len);
                Consume(len + 2);
                return line;
            }
            scanned = Math.Max(0, _count - 1);
            await FillAsync(_count + 1, ct).ConfigureAwait(false);
        }
    }

    /// <summary>Reads until at least <paramref name="bytes"/> bytes are buffered.</summary>
    private async Task FillAsync(int bytes, CancellationToken ct)
    {
        if (bytes > MaxReplyBytes + 64)
            throw new IOException($"protocol error: reply longer than {MaxReplyBytes} bytes");
        while (_count < bytes)
        {
            if (_start + bytes > _buffer.Length)
            {
                byte[] target = bytes > _buffer.Length ? new byte[Math.Max(bytes, _buffer.Length * 2)] : _buffer;
                Buffer.BlockCopy(_buffer, _start, target, 0, _count);
                _buffer = target;
                _start = 0;
            }
            int n = await _socket.ReceiveAsync(_buffer.AsMemory(_start + _count), SocketFlags.None, ct).ConfigureAwait(false);
            if (n == 0)
                throw new IOException("connection closed by server");
            _count += n;
        }
    }

    private void Consume(int bytes)
    {
        _start += bytes;
        _count -= bytes;
        if (_count == 0)
            _start = 0;
    }

    private static string Truncate(string s) => s.Length <= 80 ? s : s[..80] + "...";

    /// <summary>Closes the socket.</summary>
    public void Dispose() => _socket.Dispose();
}
