using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace Colo.Link.Internal;

/// <summary>Socket options shared by both ends of the link.</summary>
internal static class SocketSetup
{
    /// <summary>Idle time before the first TCP keepalive probe, in seconds.</summary>
    public const int KeepAliveTimeSeconds = 2;

    /// <summary>Interval between TCP keepalive probes, in seconds.</summary>
    public const int KeepAliveIntervalSeconds = 1;

    /// <summary>Unanswered probes before the kernel drops the connection.</summary>
    public const int KeepAliveRetryCount = 3;

    public static void Configure(Socket socket, ILogger logger)
    {
        socket.NoDelay = true;
        socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive, true);
        TrySet(socket, SocketOptionName.TcpKeepAliveTime, KeepAliveTimeSeconds, logger);
        TrySet(socket, SocketOptionName.TcpKeepAliveInterval, KeepAliveIntervalSeconds, logger);
        TrySet(socket, SocketOptionName.TcpKeepAliveRetryCount, KeepAliveRetryCount, logger);
    }

    private static void TrySet(Socket socket, SocketOptionName option, int value, ILogger logger)
    {
        try
        {
            socket.SetSocketOption(SocketOptionLevel.Tcp, option, value);
        }
        catch (SocketException ex)
        {
            Log.SocketOptionFailed(logger, option.ToString(), ex.Message);
        }
    }
}
