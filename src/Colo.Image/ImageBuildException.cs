namespace Colo.Image;

/// <summary>
/// Thrown when building the guest image fails. <see cref="Step"/> names the build step that failed
/// (for example <c>apt-get download</c>, <c>dpkg-deb -x</c>, <c>ldd</c>, <c>find modules</c>).
/// </summary>
public sealed class ImageBuildException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="step">Short name of the failed build step.</param>
    /// <param name="message">What went wrong.</param>
    /// <param name="inner">Optional underlying exception.</param>
    public ImageBuildException(string step, string message, Exception? inner = null)
        : base($"guest image build step '{step}' failed: {message}", inner)
    {
        Step = step;
    }

    /// <summary>Short name of the build step that failed.</summary>
    public string Step { get; }
}
