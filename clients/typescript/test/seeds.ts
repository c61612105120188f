/**
 * Type test (`tsc --strict --noEmit`, run by `make test`): the seeds' example requests are accepted by
 * the generated types, their example answers read through the client, and wrong requests are refused
 * (each `@ts-expect-error` fails the check if the line it marks compiles).
 */
import {
  AllmineAuthError,
  createAuthClient,
  type CompleteRegistrationRequest,
  type Login,
  type TokenPair,
  type User,
  type VerifyOtpRequest,
} from "../src/index";

const seedUser: User = {
  id: "3f9c1f9e-4a5b-4f7e-9d7a-2b1e0c9d8f11",
  name: "John",
  surname: "Doe",
  username: "johndoe123",
  countryCode: "90",
  phoneNumber: "5372505890",
  signupSource: "instagram_ads",
  signupCampaign: "spring_launch_2026",
  profilePhoto: "sample.jpg",
  availabilityStatus: "available",
  birthDate: "2026-01-15T10:30:00.000Z",
  gender: "male",
  interests: ["music"],
  expertise: "designer",
  email: "john@example.com",
  isEmailVerified: true,
  bio: "Passionate about technology and travel",
  instagram: "myinstagram",
  x: "mytwitterx",
  tiktok: "mytiktok",
  snapchat: "mysnapchat",
  facebook: "myfacebook",
  privacyPolicyAccepted: true,
  privacyPolicyVersion: "1.2.0",
  termsOfUseAccepted: true,
  termsOfUseVersion: "1.1.0",
  consentFormAccepted: true,
  consentFormVersion: "1.0.0",
  isRegistrationComplete: false,
  roles: ["user"],
  followersCount: 128,
  followingCount: 256,
  minutePriceInLiveStream: 1,
  creditBalance: 500,
  lastLogin: "2026-01-15T10:30:00.000Z",
  timezone: "Europe/Istanbul",
  lastUsernameChangeDate: "2026-01-15T10:30:00.000Z",
  accountDeletionStatus: "pending",
  accountDeletionRequestedAt: "2026-01-15T10:30:00.000Z",
  accountDeletionScheduledFor: "2026-01-15T10:30:00.000Z",
  accountDeletionCancelledAt: "2026-01-15T10:30:00.000Z",
  accountDeletionFinalizedAt: "2026-01-15T10:30:00.000Z",
};
// A user who has only logged in: every unknown field is null.
const newUser: User = {
  ...seedUser,
  name: null,
  surname: null,
  username: null,
  birthDate: null,
  email: null,
  lastUsernameChangeDate: null,
  accountDeletionStatus: null,
};
const seedLogin: Login = {
  accessToken: "sample",
  refreshToken: "sample",
  expiresIn: 3600,
  refreshExpiresIn: 2592000,
  user: seedUser,
  isRegistrationComplete: true,
};
const seedRefresh: TokenPair = { accessToken: "sample", refreshToken: "sample", expiresIn: 3600, refreshExpiresIn: 2592000 };

/** A fetch that answers each path with a seed answer in the envelope. */
async function seedFetch(request: Request): Promise<Response> {
  const path = new URL(request.url).pathname;
  const answers: Record<string, [number, unknown]> = {
    "/api/v1/auth/send-otp": [201, { countryCode: "+90", phoneNumber: "5551234567", code: "1234" }],
    "/api/v1/auth/send-otp-email": [201, { email: "john@example.com", code: "1234" }],
    "/api/v1/auth/verify-otp": [200, seedLogin],
    "/api/v1/auth/refresh": [200, seedRefresh],
    "/api/v1/auth/me": [200, newUser],
  };
  const [status, data] = answers[path] ?? [404, null];
  const body =
    status < 400
      ? { isSuccess: true, statusCode: status, data, errors: [], timestamp: "2026-05-22T16:11:27.126Z" }
      : { isSuccess: false, statusCode: 404, data: null, errors: ["Resource not found"], timestamp: "2026-01-15T10:30:00.000Z" };
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

export async function seedExamples(): Promise<string[]> {
  let token: string | null = null;
  const api = createAuthClient({ baseUrl: "https://example.com", fetch: seedFetch, accessToken: () => token });

  // The seeds' curl bodies.
  const sent = await api.sendOtp({ countryCode: "90", phoneNumber: "5551234567" });
  const emailSent = await api.sendOtpEmail({ email: "john@example.com" });
  const verify: VerifyOtpRequest = {
    countryCode: "90",
    phoneNumber: "5551234567",
    code: "1234",
    signupSource: "instagram_ads",
    signupCampaign: "spring_launch_2026",
  };
  const login = await api.verifyOtp(verify);
  await api.verifyOtp({ countryCode: "90", phoneNumber: "5551234567", code: "1234" });
  await api.verifyOtpEmail({ email: "john@example.com", code: "1234" });
  token = login.accessToken;
  const refreshed = await api.refreshToken({ refreshToken: "sample" });
  const me = await api.getMe();
  const registration: CompleteRegistrationRequest = {
    name: "John",
    surname: "Doe",
    username: "johndoe123",
    privacyPolicyAccepted: true,
    privacyPolicyVersion: "1.2.0",
    termsOfUseAccepted: true,
    termsOfUseVersion: "1.1.0",
  };
  await api.logout();
  await api.logout("others");

  // The answers, read as the seeds show them.
  const code: string | undefined = sent.code;
  const prefix: string = sent.countryCode;
  const email: string = emailSent.email;
  const expiresIn: number = login.expiresIn + refreshed.refreshExpiresIn;
  const complete: boolean = login.isRegistrationComplete && login.user.isRegistrationComplete;
  const followers: number = login.user.followersCount;
  const roles: string[] = login.user.roles;
  const username: string | null = me.username;
  const birthDate: string | null = me.birthDate;

  // Wrong requests and wrong reads are refused.
  // @ts-expect-error: phoneNumber is a string
  await api.sendOtp({ countryCode: "90", phoneNumber: 5551234567 });
  // @ts-expect-error: verify-otp needs the code
  await api.verifyOtp({ countryCode: "90", phoneNumber: "5551234567" });
  // @ts-expect-error: unknown fields are refused by the service, and by the types
  await api.sendOtpEmail({ email: "john@example.com", mail: "x" });
  // @ts-expect-error: the privacy policy must be accepted with its version
  await api.completeRegistration({ ...registration, privacyPolicyVersion: undefined });
  // @ts-expect-error: logout scopes are global, local, others
  await api.logout("everyone");
  // @ts-expect-error: a username may be null (a user who has only logged in)
  const notNull: string = me.username;
  // @ts-expect-error: the user has no such field
  const missing = login.user.password;

  try {
    await api.completeRegistration(registration);
  } catch (error) {
    if (error instanceof AllmineAuthError) {
      const status: number = error.statusCode;
      const texts: string[] = error.errors;
      return [String(status), ...texts];
    }
  }
  return [code ?? "", prefix, email, String(expiresIn), String(complete), String(followers), ...roles, username ?? "", birthDate ?? "", notNull, String(missing)];
}
